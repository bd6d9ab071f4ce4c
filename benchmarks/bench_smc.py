"""SMC against DPS and NUTS(gauss_newton) on the imaging tasks with the shipped checkpoints.

For every (dataset, resolution, task, test image) the data are made as `fsdiff invert` makes
them (`numpyro_fsdiff.inverse.run_task`: the image observed on its native 28 x 28 grid with
the task's operator and noise, seed 0), and each sampler reports PSNR and SSIM of its
posterior mean (model space, range 2), the 90% coverage (fraction of pixels whose true value
lies in the pixelwise 90% credible interval; SMC's intervals are weighted quantiles), the
log-evidence (SMC only), score evaluations and wall time (compilation included). DPS and
NUTS go through `run_task` (DPS: normalised guidance; NUTS: `init="map"`, 2 chains,
`mass_matrix="gauss_newton"`).

    python benchmarks/bench_smc.py --tasks deblur inpaint superres sparse --images 20
    python benchmarks/bench_smc.py --tasks deblur --images 2 --samplers smc dps \\
        --out benchmarks/results/smc_small.json
    python benchmarks/bench_smc.py --render benchmarks/results/smc_small.json
    python benchmarks/bench_smc.py --paired new.json old.json,old_images10-19.json

`--paired A B` compares two sets of runs image by image: for every (dataset, resolution,
task) it takes the images both have and reports A's and B's mean PSNR, the mean paired
difference A - B with its standard error over those images, and both mean coverages. A
comma joins files into one set; `file.json:DPS` keeps only that sampler's rows.

The commands of the committed results are in benchmarks/results/smc.md.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from numpyro_fsdiff._io import write_text

RESULTS = Path(__file__).parent / "results"


def smc_settings(particles, steps, time_grid="log-snr", twist_variance=1.0, move_steps=0,
                 islands=1, solver="euler", twist_crossover=0.0) -> str:
    """The rows' `settings` label of an SMC run: what differs from `SMC`'s defaults."""
    return (f"{particles} particles, {steps} {time_grid} steps"
            + ("" if twist_variance == 1.0 else f", twist variance {twist_variance}")
            + ("" if twist_crossover == 0.0 else f", twist crossover {twist_crossover}")
            + (f", {move_steps} MALA moves per step" if move_steps else "")
            + (f", {islands} islands" if islands > 1 else "")
            + ("" if solver == "euler" else f", {solver}"))


def smc_row(args, dataset, resolution, task, image):
    import numpyro_fsdiff as fsd
    from numpyro_fsdiff import data as fsdata
    from numpyro_fsdiff.cli import task_operator
    from numpyro_fsdiff.cli._tasks import NATIVE, load_checkpoint_or_pretrained
    from numpyro_fsdiff.inverse import SMC, GaussianNoise, psnr, ssim
    from numpyro_fsdiff.metrics import coverage

    ckpt = load_checkpoint_or_pretrained("mnist" if dataset == "mnist" else "fashion-mnist")
    try:
        images = fsdata.load(dataset, split="test").images
    except FileNotFoundError:
        images = fsdata.load_subset().images
    x28 = jnp.asarray(ckpt.from_pixels(jnp.asarray(images[image])), dtype=jnp.float32)
    grid = ckpt.grid((resolution, resolution))
    truth = fsd.resample(x28, grid.shape)
    operator, sigma = task_operator(task, seed=0)
    key_noise, key_post = jax.random.split(jax.random.key(0))
    clean = operator(x28, ckpt.grid(NATIVE))
    y = clean + sigma * jax.random.normal(key_noise, clean.shape)
    sampler = SMC(
        ckpt.model,
        ckpt.sde,
        num_particles=args.particles,
        steps=args.steps,
        batch_size=args.batch_size,
        time_grid=args.time_grid,
        twist_variance=args.twist_variance,
        twist_crossover=args.twist_crossover,
        move_steps=args.move_steps,
        num_islands=args.islands,
        solver=args.solver,
    )
    out = sampler.run_linear(y, operator, grid, GaussianNoise(sigma), key=key_post)
    return {
        "dataset": dataset,
        "resolution": resolution,
        "task": task,
        "image": image,
        "sampler": "SMC",
        "settings": smc_settings(args.particles, args.steps, args.time_grid,
                                 args.twist_variance, args.move_steps, args.islands, args.solver,
                                 args.twist_crossover),
        "psnr": float(psnr(out.mean, truth, data_range=2.0)),
        "ssim": float(ssim(out.mean, truth, data_range=2.0, window=7)),
        "coverage_90": float(coverage(out.particles, truth, 0.9, weights=out.weights)),
        "log_evidence": float(out.log_evidence),
        "score_evaluations": out.score_evaluations,
        "wall_time_s": out.wall_time_s,
        "min_ess": float(jnp.min(out.ess)),
        "final_ess": float(out.ess[-1]),
        "num_resamplings": int(out.num_resamplings),
        "num_distinct_ancestors": int(out.num_distinct_ancestors),
        "move_acceptance": (
            float(jnp.nanmean(out.move_acceptance)) if args.move_steps else None
        ),
    }


def task_row(args, sampler, dataset, resolution, task, image):
    from numpyro_fsdiff.cli import run_task

    with tempfile.TemporaryDirectory() as folder:
        report = run_task(
            task=task,
            checkpoint="mnist" if dataset == "mnist" else "fashion-mnist",
            dataset=dataset,
            image=image,
            resolution=resolution,
            sampler=sampler,
            num_samples=args.dps_samples if sampler == "dps" else args.nuts_samples,
            num_warmup=args.nuts_warmup,
            num_chains=2,
            steps=args.dps_steps,
            mass_matrix="gauss_newton",
            init_steps=50,
            max_tree_depth=4,
            out=folder,
        )
    settings = (
        f"{args.dps_samples} samples, {args.dps_steps} steps"
        if sampler == "dps"
        else f"2 x ({args.nuts_warmup} + {args.nuts_samples}), gauss_newton"
    )
    return {
        "dataset": dataset,
        "resolution": resolution,
        "task": task,
        "image": image,
        "sampler": report["sampler"],
        "settings": settings,
        "psnr": report["metrics"]["psnr"],
        "ssim": report["metrics"]["ssim"],
        "coverage_90": report["metrics"].get("coverage_90"),
        "log_evidence": None,
        "score_evaluations": report["info"].get("score_evaluations"),
        "wall_time_s": report["info"]["wall_time_s"],
        "rhat_max": report["diagnostics"].get("rhat_max"),
    }


def render(paths):
    rows = []
    for path in paths:
        rows += json.loads(Path(path).read_text())
    groups = {}
    for r in rows:
        key = (r["dataset"], r["resolution"], r["task"], r["sampler"], r["settings"])
        groups.setdefault(key, []).append(r)
    lines = [
        "| dataset | res | task | sampler | settings | images | PSNR | SSIM | cov. 90 | "
        "log-evidence | score evals | wall (s) | min ESS | distinct ancestors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def med(rs, k, digits=2):
        values = [r[k] for r in rs if r.get(k) is not None]
        return "-" if not values else f"{statistics.median(values):.{digits}f}"

    def mean(rs, k, digits=2):
        values = [r[k] for r in rs if r.get(k) is not None]
        return "-" if not values else f"{statistics.mean(values):.{digits}f}"

    for (dataset, res, task, sampler, _), rs in sorted(groups.items()):
        lines.append(
            f"| {dataset} | {res} | {task} | {sampler} | {rs[0]['settings']} | {len(rs)} | "
            f"{mean(rs, 'psnr')} | {mean(rs, 'ssim', 3)} | {mean(rs, 'coverage_90')} | "
            f"{mean(rs, 'log_evidence', 1)} | {med(rs, 'score_evaluations', 0)} | "
            f"{med(rs, 'wall_time_s', 1)} | {mean(rs, 'min_ess', 1)} | "
            f"{mean(rs, 'num_distinct_ancestors', 1)} |"
        )
    text = "\n".join(lines)
    return text + "\n\nMeans over images (wall time and score evaluations: medians).\n"


def _runs(spec):
    """The rows of comma-joined JSON files, by (dataset, resolution, task, image); a
    `path:SAMPLER` suffix keeps that sampler's rows only."""
    runs = {}
    for part in spec.split(","):
        path, _, sampler = part.partition(":")
        for r in json.loads(Path(path).read_text()):
            if not sampler or r["sampler"] == sampler:
                key = (r["dataset"], r["resolution"], r["task"], r["image"])
                if key in runs:
                    raise ValueError(f"{spec!r} holds two runs of {key}; keep one sampler "
                                     "with `path:SAMPLER`.")
                runs[key] = r
    return runs


def paired(spec_a, spec_b):
    """A markdown table of A against B on the images both have (see the module docstring)."""
    a, b = _runs(spec_a), _runs(spec_b)
    groups = {}
    for key in sorted(a.keys() & b.keys()):
        groups.setdefault(key[:3], []).append((a[key], b[key]))
    if not groups:
        raise ValueError(f"{spec_a!r} and {spec_b!r} have no (dataset, resolution, task, "
                         "image) in common.")
    lines = [
        "| dataset | res | task | images | PSNR A / B | A minus B (paired) | coverage 90, A / B |",
        "|---|---|---|---|---|---|---|",
    ]
    for (dataset, res, task), pairs in groups.items():
        diff = [ra["psnr"] - rb["psnr"] for ra, rb in pairs]
        se = statistics.stdev(diff) / len(diff) ** 0.5 if len(diff) > 1 else float("nan")
        images = sorted(ra["image"] for ra, _ in pairs)
        span = (f"{images[0]}-{images[-1]}" if images == list(range(images[0], images[-1] + 1))
                else " ".join(map(str, images)))
        lines.append(
            f"| {dataset} | {res} | {task} | {span} | "
            f"{statistics.mean(ra['psnr'] for ra, _ in pairs):.2f} / "
            f"{statistics.mean(rb['psnr'] for _, rb in pairs):.2f} | "
            f"{statistics.mean(diff):+.2f} +- {se:.2f} | "
            f"{statistics.mean(ra['coverage_90'] for ra, _ in pairs):.2f} / "
            f"{statistics.mean(rb['coverage_90'] for _, rb in pairs):.2f} |"
        )
    return "\n".join(lines) + "\n\n(standard errors over the images.)\n"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=["mnist"])
    parser.add_argument("--resolutions", nargs="+", type=int, default=[28])
    parser.add_argument("--tasks", nargs="+", default=["deblur"])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--first-image", type=int, default=0,
                        help="test images first-image .. first-image + images - 1")
    parser.add_argument("--samplers", nargs="+", default=["smc", "dps", "nuts"])
    parser.add_argument("--particles", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--time-grid", default="log-snr", help="SMC's time grid")
    parser.add_argument("--twist-variance", type=float, default=1.0, help="SMC's kappa")
    parser.add_argument("--twist-crossover", type=float, default=0.0,
                        help="SMC's twist_crossover")
    parser.add_argument("--move-steps", type=int, default=0, help="SMC's MALA moves per step")
    parser.add_argument("--islands", type=int, default=1, help="SMC's independent islands")
    parser.add_argument("--solver", default="euler", help="SMC's prior transition")
    parser.add_argument("--dps-samples", type=int, default=16)
    parser.add_argument("--dps-steps", type=int, default=100)
    parser.add_argument("--nuts-warmup", type=int, default=40)
    parser.add_argument("--nuts-samples", type=int, default=40)
    parser.add_argument("--out", default=str(RESULTS / "smc.json"))
    parser.add_argument("--render", nargs="*", help="only render these JSON files")
    parser.add_argument("--paired", nargs=2, metavar=("A", "B"),
                        help="only compare two sets of runs image by image")
    args = parser.parse_args(argv)
    if args.paired:
        print(paired(*args.paired))
        return
    if args.render is not None:
        print(render(args.render or [args.out]))
        return
    rows = []
    out = Path(args.out)
    # images outermost, so that a run stopped early has the same images for every task
    for image in range(args.first_image, args.first_image + args.images):
        for dataset in args.datasets:
            for resolution in args.resolutions:
                for task in args.tasks:
                    for sampler in args.samplers:
                        start = time.perf_counter()
                        if sampler == "smc":
                            row = smc_row(args, dataset, resolution, task, image)
                        else:
                            row = task_row(args, sampler, dataset, resolution, task, image)
                        row["total_s"] = time.perf_counter() - start
                        print(json.dumps(row), flush=True)
                        rows.append(row)
                        write_text(out, json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
