"""How long NUTS with the shipped MNIST prior needs to mix, on the CI-sized problem.

The problem of `tests/test_inverse.py::test_nuts_with_the_mnist_checkpoint`: 2x
super-resolution (8 x 8 cell averages, noise sigma 0.05) of the first image of the shipped
MNIST subset, solved on a 16 x 16 grid, prior `TransformedDistribution(GaussianField(Q),
ProbabilityFlow(model, Euler, 6 steps))`, 2 chains from `init="map"` (30 Adam steps) with
the linearised-posterior mass matrix (`--mass-matrix gauss_newton`: the Gauss-Newton metric
averaged over `--metric-points` warm-up draws per chain; `--checkpoint` takes another
checkpoint folder or shipped name). One row per budget (warm-up, draws, tree depth):
R-hat (max and median over pixels), bulk ESS, step size, leapfrog steps, PSNR and coverage.

    python benchmarks/bench_nuts_mixing.py --budgets 20:20:3 100:100:5 200:200:5 \\
        --out benchmarks/results/nuts_mixing.md
"""

import argparse
import os
import time

import numpyro_fsdiff as fsd
from numpyro_fsdiff.cli import reuse_freed_memory


def run(warmup: int, draws: int, depth: int, seed: int, checkpoint: str = "mnist",
        mass_matrix: str = "gaussian", metric_points: int = 5) -> dict:
    import jax
    import jax.numpy as jnp
    import numpyro.distributions as dist

    from numpyro_fsdiff.cli._tasks import load_checkpoint_or_pretrained
    from numpyro_fsdiff.inverse import (
        NUTS,
        CellAverage,
        GaussianNoise,
        naive_inverse,
        posterior,
        psnr,
    )

    ckpt = load_checkpoint_or_pretrained(checkpoint)
    grid = ckpt.grid((16, 16))
    image = fsd.data.load_subset().images[0]
    truth = fsd.resample(ckpt.from_pixels(jnp.asarray(image)), grid.shape)
    operator, sigma = CellAverage((8, 8)), 0.05
    y = operator(truth, grid) + sigma * jax.random.normal(jax.random.key(0), (8, 8))
    flow = fsd.ProbabilityFlow(ckpt.model, ckpt.sde, grid, solver="euler", steps=6)
    prior = dist.TransformedDistribution(fsd.GaussianField(ckpt.covariance, grid), flow)
    sampler = NUTS(num_warmup=warmup, num_samples=draws, num_chains=2,
                   chain_method="vectorized", max_tree_depth=depth, init="map",
                   init_steps=30, mass_matrix=mass_matrix, metric_points=metric_points)
    start = time.perf_counter()
    result = posterior(y, operator, prior, sampler, key=jax.random.key(seed), grid=grid,
                       noise=GaussianNoise(sigma), truth=truth, data_range=2.0)
    wall = time.perf_counter() - start
    naive = float(psnr(naive_inverse(y, operator, grid), truth, data_range=2.0))
    return {"warmup": warmup, "draws": draws, "depth": depth, "wall_s": wall,
            "naive_psnr": naive, "gradients": result.info["gradient_evaluations"],
            **result.diagnostics, **result.metrics}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", nargs="+", default=["20:20:3", "100:100:5"],
                        help="warmup:draws:max_tree_depth per row")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--checkpoint", default="mnist",
                        help="a checkpoint folder, or the name of a shipped one")
    parser.add_argument("--mass-matrix", default="gaussian", choices=("gaussian", "gauss_newton"))
    parser.add_argument("--metric-points", type=int, default=5,
                        help="warm-up draws per chain of the Gauss-Newton metric")
    parser.add_argument("--out", default=None, help="append a Markdown table to this file")
    args = parser.parse_args(argv)
    reuse_freed_memory()
    header = ("| warm-up | draws | depth | wall (s) | R-hat max | R-hat median | ESS min | "
              "ESS median | step size | leapfrog | accept | divergences | gradients | PSNR (dB) | "
              "coverage 90% |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = []
    for budget in args.budgets:
        warmup, draws, depth = (int(v) for v in budget.split(":"))
        r = run(warmup, draws, depth, args.seed, args.checkpoint, args.mass_matrix,
                args.metric_points)
        line = (f"| {warmup} | {draws} | {depth} | {r['wall_s']:.0f} | {r['rhat_max']:.3f} | "
                f"{r['rhat_median']:.3f} | {r['ess_bulk_min']:.1f} | "
                f"{r['ess_bulk_median']:.1f} | {r['step_size']:.3f} | "
                f"{r['mean_leapfrog_steps']:.1f} | {r['accept_prob']:.2f} | "
                f"{r['divergences']} | {r['gradients']} | {r['psnr']:.2f} | "
                f"{r['coverage_90']:.2f} |")
        print(line, flush=True)
        lines.append(line)
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    mass = args.mass_matrix + (f" ({args.metric_points} points per chain)"
                               if args.mass_matrix == "gauss_newton" else "")
    text = "\n".join([f"checkpoint {args.checkpoint}; mass matrix {mass}; seed {args.seed}; "
                      "naive inverse PSNR "
                      f"{r['naive_psnr']:.2f} dB; load average after {load}", "", header,
                      *lines, ""])
    print(text)
    if args.out:
        fsd._io.append_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
