"""Benchmark the posterior samplers of numpyro_fsdiff.inverse, per task and sampler.

Two suites:

- `gaussian` (always): Gaussian data N(0, C) on a small grid with the *analytic* score, the
  prior `TransformedDistribution(GaussianField(Q), ProbabilityFlow(GaussianScore))`, so the
  exact posterior is known; reports the error of each sampler against it as well as
  PSNR/SSIM/coverage against the truth.
- `mnist` (with `--checkpoint`): the four tasks of `fsdiff invert` on MNIST / Fashion-MNIST
  test images with a trained checkpoint.

Reported: wall time (first call, compilation included) and the median of `--repeats` further
calls where the compiled program is reused (DPS), NUTS warm-up and sampling times separately,
score evaluations, ESS per second (NUTS, bulk ESS min over pixels / sampling time), PSNR and
SSIM of the mean, coverage of the pixelwise 90% credible intervals.

    python benchmarks/bench_inverse.py --suite gaussian
    python benchmarks/bench_inverse.py --suite mnist --samplers dps map nuts
    python benchmarks/bench_inverse.py --collect  # fsdiff invert reports -> inverse_mnist.json
    python benchmarks/bench_inverse.py --render   # rewrite benchmarks/results/inverse.md
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

RESULTS = Path(__file__).parent / "results"


def gaussian_suite(args):
    import numpyro.distributions as dist

    from numpyro_fsdiff import VPSDE, GaussianField, GaussianScore, Grid, ProbabilityFlow
    from numpyro_fsdiff._sample import score_evaluations_per_step
    from numpyro_fsdiff._solvers import resolve_solver
    from numpyro_fsdiff.covariance import Matern
    from numpyro_fsdiff.inverse import (
        DPS,
        MAP,
        NUTS,
        SVI,
        CellAverage,
        GaussianBlur,
        GaussianNoise,
        Mask,
        PointObservations,
        gaussian_posterior,
        posterior,
    )

    n = args.size
    grid = Grid((n, n))
    data_cov = Matern(alpha=2.0, tau=3.0, scale=3.0)
    sde = VPSDE(Matern(alpha=2.0, tau=3.0, scale=1.0))
    score = GaussianScore(data_cov, sde, grid)
    ode_steps = 8
    flow = ProbabilityFlow(score, sde, grid, solver="tsit5", steps=ode_steps)
    prior = dist.TransformedDistribution(GaussianField(sde.covariance, grid), flow)
    q = sde.covariance.eigenvalues(grid)
    eigenvalues = q * score.marginal_eigenvalues(1e-3) / score.marginal_eigenvalues(sde.T)
    per_step, initial = score_evaluations_per_step(resolve_solver("tsit5", kind="ode"))
    per_solve = initial + per_step * ode_steps
    rng = np.random.default_rng(0)
    tasks = {
        "deblur": GaussianBlur(1.5 / n),
        "inpaint": Mask(lambda x1, x2: ~((abs(x1 - 0.5) < 0.2) & (abs(x2 - 0.5) < 0.2))),
        "superres": CellAverage((n // 2, n // 2)),
        "sparse": PointObservations(rng.uniform(size=(n * n // 3, 2))),
    }
    samplers = {
        "nuts": lambda: NUTS(num_warmup=args.warmup, num_samples=args.samples, num_chains=2,
                             chain_method="vectorized", max_tree_depth=6),
        "svi": lambda: SVI("normal", num_steps=1000, learning_rate=0.02, num_samples=500),
        "map": lambda: MAP(num_steps=500, learning_rate=0.05),
        "dps": lambda: DPS(score, sde, num_samples=64, steps=200, weighting="normalised"),
    }
    sigma = 0.1
    truth = data_cov.sample(jax.random.key(1), grid)
    rows = []
    for task, operator in tasks.items():
        y = operator(truth, grid) + sigma * jax.random.normal(
            jax.random.key(2), operator.data_shape(grid))
        mean, cov = gaussian_posterior(y, operator, eigenvalues, grid, sigma)
        std = jnp.sqrt(jnp.diag(cov)).reshape(grid.shape)
        for name in args.samplers:
            sampler = samplers[name]()
            result = posterior(y, operator, prior, sampler, key=jax.random.key(3), grid=grid,
                               noise=GaussianNoise(sigma), truth=truth)
            repeats = []
            if name == "dps":
                for r in range(args.repeats):
                    again = posterior(y, operator, prior, sampler, key=jax.random.key(10 + r),
                                      grid=grid, noise=GaussianNoise(sigma), truth=truth)
                    repeats.append(again.info["wall_time_s"])
            info = dict(result.info)
            if "gradient_evaluations" in info:
                info["score_evaluations"] = 2 * per_solve * info["gradient_evaluations"]
            row = {
                "suite": "gaussian", "grid": n, "task": task, "sampler": result.method,
                "metrics": result.metrics, "diagnostics": _floats(result.diagnostics),
                "info": _floats(info),
                "median_repeat_wall_s": statistics.median(repeats) if repeats else None,
                "mean_error_over_sd": float(jnp.sqrt(jnp.mean(((result.mean - mean) / std) ** 2))),
                "std_ratio": float(jnp.mean(result.std) / jnp.mean(std)),
                "exact_coverage_90": float(_gaussian_coverage(mean, std, truth)),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def _gaussian_coverage(mean, std, truth, z=1.6448536269514722):
    return jnp.mean(jnp.abs(truth - mean) <= z * std)


def _floats(d):
    return {k: (v if isinstance(v, (int, str)) else float(v)) for k, v in d.items()}


def mnist_suite(args):
    from numpyro_fsdiff.cli import run_task

    rows = []
    for dataset in args.datasets:
        for resolution in args.resolutions:
            for task in args.tasks:
                for sampler in args.samplers:
                    start = time.perf_counter()
                    report = run_task(
                        task=task, checkpoint=args.checkpoint if dataset == "mnist"
                        else args.checkpoint_fashion, dataset=dataset, image=args.image,
                        resolution=resolution, sampler=sampler, num_samples=args.samples,
                        num_warmup=args.warmup, num_chains=2,
                        steps=args.steps if sampler == "dps" else args.opt_steps,
                        ode_steps=args.ode_steps, out=RESULTS / "inverse_panels",
                    )
                    report["suite"] = "mnist"
                    report["total_s"] = time.perf_counter() - start
                    print(json.dumps(report), flush=True)
                    rows.append(report)
    return rows


def collect():
    """The `fsdiff invert` reports under results/inverse_panels (those that name their flow
    solver, i.e. written by the current code) as the rows of results/inverse_mnist.json."""
    rows = []
    for path in sorted((RESULTS / "inverse_panels").glob("*.json")):
        report = json.loads(path.read_text())
        if "ode_solver" in report:
            rows.append(dict(report, suite="mnist"))
    (RESULTS / "inverse_mnist.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"{len(rows)} rows")


def render(paths):
    rows = []
    for path in paths:
        if Path(path).exists():
            rows += json.loads(Path(path).read_text())
    lines = ["# Inverse problems: benchmark", "",
             "Generated by `benchmarks/bench_inverse.py --render` from the JSON files beside it. "
             "Wall times on the shared 2-core CPU (heavily loaded by parallel jobs while these "
             "ran, so absolute times are pessimistic). `first` includes compilation; NUTS "
             "splits warm-up (with compilation) from sampling, and ESS/s divides the minimum "
             "bulk ESS over pixels by the sampling time. Score evaluations count one per "
             "score call plus one per vector-Jacobian product through it.", ""]
    gauss = [r for r in rows if r["suite"] == "gaussian"]
    if gauss:
        lines += ["### Gaussian data, analytic score (exact posterior known)", "",
                  f"Grid {gauss[0]['grid']} x {gauss[0]['grid']}, noise 0.1, prior through "
                  "the probability flow (Tsit5, 8 steps). `err/sd`: RMS over pixels of "
                  "(mean - exact mean) / exact sd; `std ratio`: mean std / exact mean std; "
                  "`exact cov.`: coverage of the exact posterior's 90% intervals (the target).",
                  "",
                  "| task | sampler | first (s) | repeat median (s) | warm-up / sampling (s) | "
                  "score evals | ESS/s | R-hat | PSNR | SSIM | cov. 90 | exact cov. | err/sd | "
                  "std ratio |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in gauss:
            i, d, m = r["info"], r["diagnostics"], r["metrics"]
            lines.append(
                f"| {r['task']} | {r['sampler']} | {i['wall_time_s']:.1f} | "
                f"{_fmt(r.get('median_repeat_wall_s'))} | "
                f"{_fmt(i.get('warmup_time_s'))} / {_fmt(i.get('sampling_time_s'))} | "
                f"{int(i.get('score_evaluations', 0))} | {_fmt(i.get('ess_per_second'))} | "
                f"{_fmt(d.get('rhat_max'), 3)} | {m['psnr']:.2f} | {m['ssim']:.3f} | "
                f"{m['coverage_90']:.2f} | {r['exact_coverage_90']:.2f} | "
                f"{r['mean_error_over_sd']:.3f} | {r['std_ratio']:.2f} |")
        lines.append("")
    mn = [r for r in rows if r["suite"] == "mnist"]
    if mn:
        lines += ["### MNIST / Fashion-MNIST test images, shipped checkpoints", "",
                  "`fsdiff invert` with `--checkpoint mnist` / `fashion-mnist` (the shipped "
                  "weights) on test image 0; commands in `benchmarks/results/inverse_mnist.md`. "
                  "Observation on the native 28 x 28 grid; the unknown on the grid of the "
                  "`res` column (56: zero-shot refinement). PSNR/SSIM in model space "
                  "(range 2), against the spectrally resampled truth. DPS: 16 samples, 100 "
                  "Euler-Maruyama steps, normalised guidance, weight 1. NUTS and MAP go "
                  "through the probability-flow prior of the `flow` column; NUTS: 2 chains x "
                  "(40 warm-up + 40 draws) at 28 x 28, (30 + 30) at 56 x 56, tree depth <= 4, "
                  "each chain from a prior draw moved 50 Adam steps uphill, linearised-posterior "
                  "mass matrix (NUTS had not mixed in any row: R-hat far above 1.01, so its "
                  "coverage is not the posterior's); MAP: 200 Adam steps from a prior draw. "
                  "R-hat is the maximum / median over pixels (split, rank-normalised); ESS/s "
                  "the minimum bulk ESS over pixels per second of sampling. MAP has a single "
                  "point, so no coverage. The naive inverse is the truncated pseudo-inverse "
                  "(`naive_inverse`, rcond 1e-3), which explodes for deblurring. Score "
                  "evaluations: NUTS/MAP count two per flow step and gradient (forward and "
                  "reverse pass), initialisation and warm-up included; DPS one per score call "
                  "and one per vector-Jacobian product.", "",
                  "| dataset | res | task | sampler | flow | wall (s) | score evals | ESS/s | "
                  "R-hat max / med | PSNR | SSIM | cov. 90 | naive PSNR |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        order = {"NUTS": 0, "MAP": 1, "DPS": 2}
        mn.sort(key=lambda r: (r["dataset"], r["resolution"], r["task"],
                               order.get(r["sampler"], 3)))
        for r in mn:
            i, d, m = r["info"], r["diagnostics"], r["metrics"]
            naive = r.get("naive_inverse", {}).get("psnr")
            flow = "-" if r["sampler"] == "DPS" else f"{r.get('ode_solver', '?')} {r['ode_steps']}"
            rhat = "-" if "rhat_max" not in d else (
                f"{_fmt(d.get('rhat_max'), 2)} / {_fmt(d.get('rhat_median'), 2)}")
            coverage = "-" if r["sampler"] == "MAP" else f"{m['coverage_90']:.2f}"
            lines.append(
                f"| {r['dataset']} | {r['resolution']} | {r['task']} | {r['sampler']} | "
                f"{flow} | {i['wall_time_s']:.1f} | {int(i.get('score_evaluations', 0))} | "
                f"{_fmt(i.get('ess_per_second'), 3)} | {rhat} | "
                f"{m['psnr']:.2f} | {m['ssim']:.3f} | {coverage} | {_fmt(naive)} |")
        lines.append("")
    (RESULTS / "inverse.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _fmt(v, digits=2):
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return f"{v:.{digits}f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=("gaussian", "mnist"), default="gaussian")
    parser.add_argument("--size", type=int, default=8, help="grid side of the gaussian suite")
    parser.add_argument("--samplers", nargs="+", default=["nuts", "svi", "map", "dps"])
    parser.add_argument("--tasks", nargs="+", default=["deblur", "inpaint", "superres", "sparse"])
    parser.add_argument("--datasets", nargs="+", default=["mnist"])
    parser.add_argument("--resolutions", nargs="+", type=int, default=[28])
    parser.add_argument("--checkpoint", default="mnist")
    parser.add_argument("--checkpoint-fashion", default="fashion-mnist")
    parser.add_argument("--image", type=int, default=0)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--steps", type=int, default=200, help="DPS steps")
    parser.add_argument("--opt-steps", type=int, default=300, help="SVI/MAP steps")
    parser.add_argument("--ode-steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="JSON file for the rows")
    parser.add_argument("--collect", action="store_true",
                        help="gather the fsdiff invert reports of results/inverse_panels into "
                             "results/inverse_mnist.json")
    parser.add_argument("--render", action="store_true",
                        help="only rewrite results/inverse.md from the JSON files")
    args = parser.parse_args(argv)
    if args.collect:
        collect()
        return
    if args.render:
        render(sorted(RESULTS.glob("inverse_*.json")))
        return
    rows = gaussian_suite(args) if args.suite == "gaussian" else mnist_suite(args)
    out = Path(args.out or RESULTS / f"inverse_{args.suite}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
