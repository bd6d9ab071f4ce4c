"""Benchmark DiffusionPrior.log_prob and its gradient, and NUTS in the latent vs on log_prob.

Two parts (run both by default):

- `cost`: wall time of `log_prob` and of `jax.grad(log_prob)` for one field at grid sizes
  8, 16, 28, 56, exact divergence (N JVPs per vector-field evaluation) vs Hutchinson (one
  fixed Rademacher probe). Scores: the analytic `GaussianScore` (FFT, cheap: shows the
  solver's own overhead) and an FNO (the MNIST checkpoint if installed, else a randomly
  initialised FNO of the same default size, labelled as such). Compile time (first call minus
  the median) is reported separately from the median of `--repeats` calls.
- `nuts`: the linear-Gaussian inverse problem (Gaussian blur width 0.1 + noise 0.1) at 16 x 16
  with the analytic-score prior: NUTS in the Gaussian latent (TransformReparam over
  ProbabilityFlow) vs NUTS on DiffusionPrior.log_prob (exact divergence). Reports bulk ESS
  (min and median over pixels) per second of sampling: the first run (compilation, warm-up
  and sampling) is timed as a whole; then a second sampling phase of the same length continues
  from the adapted state with the compiled program, and its ESS and time give ESS/s.

    python benchmarks/bench_logprob.py                 # everything, writes results/logprob.json
    python benchmarks/bench_logprob.py --parts cost --sizes 8 16
    python benchmarks/bench_logprob.py --render        # results/logprob.json -> results/logprob.md
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


def timed(fn, *args, repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        runs.append(time.perf_counter() - start)
    median = statistics.median(runs)
    return {"compile_s": max(first - median, 0.0), "median_s": median, "repeats": repeats}


def fno_score():
    """(score, sde, label): the MNIST checkpoint if installed, else a random default FNO."""
    import numpyro_fsdiff as fs

    try:
        ckpt = fs.pretrained("mnist")
        return ckpt.model, ckpt.sde, "FNO (pretrained mnist)"
    except (FileNotFoundError, ValueError, AttributeError):
        from numpyro_fsdiff.covariance import Matern
        from numpyro_fsdiff.nn import FNO

        sde = fs.VPSDE(Matern(2.0, 3.0))
        network = FNO(key=jax.random.key(0))
        return fs.NoisePredictionScore(network, sde), sde, "FNO (random init, default size)"


def cost_part(args):
    import numpyro_fsdiff as fs
    from numpyro_fsdiff.covariance import Matern

    rows = []
    q = Matern(2.0, 3.0)
    gaussian_sde = fs.VPSDE(q)
    fno, fno_sde, fno_label = fno_score() if "fno" in args.scores else (None, None, None)
    log_prob = jax.jit(lambda d, x: d.log_prob(x))
    grad = jax.jit(jax.grad(lambda x, d: d.log_prob(x)))
    for n in args.sizes:
        grid = fs.Grid((n, n))
        x = Matern(2.5, 4.0, 3.0).sample(jax.random.key(n), grid)
        for score_name in args.scores:
            if score_name == "gaussian":
                score, sde, label = (
                    fs.GaussianScore(Matern(2.5, 4.0, 3.0), gaussian_sde, grid),
                    gaussian_sde,
                    "GaussianScore",
                )
                options = {}
            else:
                score, sde, label = fno, fno_sde, fno_label
                # fixed steps bound the cost of an arbitrary network's flow
                options = dict(solver="heun", steps=args.fno_steps)
            for divergence in ("exact", "hutchinson"):
                if score_name == "fno" and divergence == "exact" and n > args.fno_exact_max:
                    rows.append(dict(score=label, n=n, divergence=divergence, skipped=True))
                    continue
                kwargs = dict(divergence=divergence, **options)
                if divergence == "exact" and n * n > 1024:
                    kwargs["divergence"] = fs.ExactDivergence(chunk_size=256)
                prior = fs.DiffusionPrior(score, sde, grid, **kwargs)
                row = dict(
                    score=label,
                    n=n,
                    divergence=divergence,
                    options=str(options or "tsit5 adaptive 1e-5"),
                )
                value = timed(log_prob, prior, x, repeats=args.repeats)
                row["log_prob"] = value
                row["value"] = float(log_prob(prior, x))
                row["grad"] = timed(grad, x, prior, repeats=args.repeats)
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def nuts_part(args):
    import numpyro
    import numpyro.distributions as dist
    from numpyro.diagnostics import effective_sample_size
    from numpyro.infer import MCMC, NUTS
    from numpyro.infer.reparam import TransformReparam

    import numpyro_fsdiff as fs
    from numpyro_fsdiff.covariance import Matern

    n = args.nuts_size
    grid = fs.Grid((n, n))
    q, c = Matern(1.5, 2.0), Matern(2.0, 1.0, 1.0)
    sde = fs.VPSDE(q)
    score = fs.GaussianScore(c, sde, grid)
    blur = jnp.exp(-0.5 * (2 * jnp.pi * 0.1) ** 2 * grid.frequencies_squared())
    x_true = c.sample(jax.random.key(0), grid)
    y = fs.fourier_multiply(x_true, blur) + 0.1 * jax.random.normal(jax.random.key(1), grid.shape)
    options = dict(solver="midpoint", steps=12)

    def likelihood(x):
        numpyro.sample("y", dist.Normal(fs.fourier_multiply(x, blur), 0.1).to_event(2), obs=y)

    def on_log_prob():
        prior = fs.DiffusionPrior(score, sde, grid, divergence=args.nuts_divergence, **options)
        likelihood(numpyro.sample("x", prior))

    def in_latent():
        flow = fs.ProbabilityFlow(score, sde, grid, **options)
        prior = dist.TransformedDistribution(fs.GaussianField(q, grid), flow)
        with numpyro.handlers.reparam(config={"x": TransformReparam()}):
            likelihood(numpyro.sample("x", prior))

    rows = []
    for name, model in (
        ("latent (TransformReparam)", in_latent),
        (f"log_prob ({args.nuts_divergence} divergence)", on_log_prob),
    ):
        mcmc = MCMC(
            NUTS(model, dense_mass=args.dense_mass, max_tree_depth=args.max_tree_depth),
            num_warmup=args.num_warmup,
            num_samples=args.num_samples,
            progress_bar=False,
        )
        start = time.perf_counter()
        mcmc.run(jax.random.key(2), extra_fields=("num_steps",))
        first = time.perf_counter() - start
        # sampling phase only: continue from the adapted state with the compiled program
        mcmc.post_warmup_state = mcmc.last_state
        start = time.perf_counter()
        mcmc.run(mcmc.post_warmup_state.rng_key, extra_fields=("num_steps",))
        second = time.perf_counter() - start
        xs = np.asarray(mcmc.get_samples()["x"]).reshape(args.num_samples, -1)
        ess = effective_sample_size(xs[None])
        steps = np.asarray(mcmc.get_extra_fields()["num_steps"])
        row = dict(
            method=name,
            n=n,
            num_warmup=args.num_warmup,
            num_samples=args.num_samples,
            dense_mass=args.dense_mass,
            max_tree_depth=args.max_tree_depth,
            first_run_s=first,
            run_s=second,
            ess_min=float(ess.min()),
            ess_median=float(np.median(ess)),
            ess_min_per_s=float(ess.min() / second),
            ess_median_per_s=float(np.median(ess) / second),
            mean_leapfrog_steps=float(steps.mean()),
        )
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def mnist_part(args):
    """log_prob and log_prob_relative of MNIST test images with the pretrained checkpoint."""
    import numpyro_fsdiff as fs
    from numpyro_fsdiff.data import load_subset

    ckpt = fs.pretrained("mnist")
    images = load_subset().images[: args.num_images]
    fields28 = ckpt.from_pixels(jnp.asarray(images))
    rows = []
    for n in (28, 56):
        grid = ckpt.grid((n, n))
        fields = fs.resample(fields28, (n, n)) if n != 28 else fields28
        noise = ckpt.covariance.sample(jax.random.key(5), grid, (args.num_images,))
        prior = fs.DiffusionPrior(
            ckpt.model,
            ckpt.sde,
            grid,
            solver="heun",
            steps=args.fno_steps,
            divergence="hutchinson",
            num_probes=args.num_probes,
            key=jax.random.key(1),
        )
        both = jax.jit(lambda d, x: (d.log_prob(x), d.log_prob_relative(x)))
        cost = timed(both, prior, fields[0], repeats=args.repeats)
        values = [both(prior, x) for x in fields]
        reference = [both(prior, x)[1] for x in noise]
        row = dict(
            n=n,
            solver=f"heun, {args.fno_steps} steps",
            divergence=f"hutchinson, {args.num_probes} probes",
            cost_both=cost,
            log_prob=[float(v[0]) for v in values],
            log_prob_relative=[float(v[1]) for v in values],
            labels=[int(v) for v in load_subset().labels[: args.num_images]],
            log_prob_relative_of_Q_samples=[float(v) for v in reference],
        )
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def render(path_json: Path, path_md: Path):
    from numpyro_fsdiff._io import write_text

    data = json.loads(path_json.read_text())
    lines = [
        "# log_prob and NUTS benchmarks",
        "",
        f"Machine: {data['machine']}. Produced by `python benchmarks/bench_logprob.py`; "
        "raw numbers in "
        "`logprob.json`. Times are medians of repeated calls with compilation excluded "
        "(compile = first call minus median).",
        "",
        "## Cost of `DiffusionPrior.log_prob` and its gradient (one field)",
        "",
        "| score | grid | divergence | solver | log_prob (s) | grad (s) "
        "| compile log_prob / grad (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in data.get("cost", []):
        if r.get("skipped"):
            lines.append(
                f"| {r['score']} | {r['n']}x{r['n']} | {r['divergence']} | - "
                "| skipped (too slow on this CPU) | | |"
            )
            continue
        lines.append(
            f"| {r['score']} | {r['n']}x{r['n']} | {r['divergence']} | {r['options']} | "
            f"{r['log_prob']['median_s']:.4f} | {r['grad']['median_s']:.4f} | "
            f"{r['log_prob']['compile_s']:.1f} / {r['grad']['compile_s']:.1f} |"
        )
    if data.get("nuts"):
        lines += [
            "",
            "## NUTS on the linear-Gaussian problem (analytic-score prior)",
            "",
            "| method | grid | warmup / samples "
            "| first run: compile + warmup + sampling (s) | sampling phase (s) "
            "| bulk ESS min / median | ESS/s min / median | leapfrog steps per draw |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in data["nuts"]:
            lines.append(
                f"| {r['method']} | {r['n']}x{r['n']} | {r['num_warmup']} / {r['num_samples']} | "
                f"{r['first_run_s']:.1f} | {r['run_s']:.1f} | "
                f"{r['ess_min']:.0f} / {r['ess_median']:.0f} | "
                f"{r['ess_min_per_s']:.2f} / {r['ess_median_per_s']:.2f} | "
                f"{r['mean_leapfrog_steps']:.1f} |"
            )
    if data.get("mnist"):
        lines += [
            "",
            "## MNIST checkpoint: densities of test images at 28 x 28 and 56 x 56",
            "",
            "56 x 56 fields are the 28 x 28 test images (in model space) refined spectrally. "
            "One evaluation computes both `log_prob` and `log_prob_relative` (two solves).",
            "",
            "| grid | solver | divergence | cost of both (s) | log_prob | log_prob_relative "
            "(test images) | log_prob_relative (N(0, Q) samples) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in data["mnist"]:
            fmt = lambda v: ", ".join(f"{x:.1f}" for x in v)  # noqa: E731
            lines.append(
                f"| {r['n']}x{r['n']} | {r['solver']} | {r['divergence']} | "
                f"{r['cost_both']['median_s']:.2f} | {fmt(r['log_prob'])} | "
                f"{fmt(r['log_prob_relative'])} | {fmt(r['log_prob_relative_of_Q_samples'])} |"
            )
    if data.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in data["notes"]]
    write_text(path_md, "\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parts", nargs="+", default=["cost", "nuts"], choices=["cost", "nuts", "mnist"]
    )
    parser.add_argument("--num-images", type=int, default=4)
    parser.add_argument("--num-probes", type=int, default=4)
    parser.add_argument("--sizes", nargs="+", type=int, default=[8, 16, 28, 56])
    parser.add_argument(
        "--scores", nargs="+", default=["gaussian", "fno"], choices=["gaussian", "fno"]
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fno-steps", type=int, default=16)
    parser.add_argument("--fno-exact-max", type=int, default=16)
    parser.add_argument("--nuts-size", type=int, default=16)
    parser.add_argument("--num-warmup", type=int, default=300)
    parser.add_argument("--num-samples", type=int, default=300)
    parser.add_argument("--dense-mass", action="store_true")
    parser.add_argument("--max-tree-depth", type=int, default=10)
    parser.add_argument("--nuts-divergence", default="exact", choices=["exact", "hutchinson"])
    parser.add_argument("--machine", default="2 shared CPU cores (other jobs running)")
    parser.add_argument("--render", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "logprob.json")
    args = parser.parse_args(argv)
    if args.render:
        render(args.out, args.out.with_suffix(".md"))
        return
    from numpyro_fsdiff._io import write_text

    data = json.loads(args.out.read_text()) if args.out.exists() else {}
    data["machine"] = args.machine
    if "cost" in args.parts:
        data["cost"] = cost_part(args)
        write_text(args.out, json.dumps(data, indent=1))
    if "nuts" in args.parts:
        data["nuts"] = nuts_part(args)
        write_text(args.out, json.dumps(data, indent=1))
    if "mnist" in args.parts:
        data["mnist"] = mnist_part(args)
        write_text(args.out, json.dumps(data, indent=1))
    render(args.out, args.out.with_suffix(".md"))


if __name__ == "__main__":
    main()
