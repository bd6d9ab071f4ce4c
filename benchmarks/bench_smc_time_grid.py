"""Which time grid SMC should default to: the bimodal problem against its closed forms.

SMC targets the Euler-Maruyama law of the reverse chain on its own grid, so the grid moves
the target as well as the efficiency. On the two-component mixture of
`bench_smc_bimodal.py` (exact score, closed-form posterior at t_eps), each grid x step count
gets `--runs` independent runs; the table gives the weight of component 1 and log p(y), as
mean +- standard error over the runs, against the closed forms, the largest |z| of the
component posterior means (each pixel's weighted mean against the exact one, over its
standard error), and the median final ESS.

    python benchmarks/bench_smc_time_grid.py --runs 16 --particles 1024 \\
        --configs uniform:50 log-snr:50 uniform:200 log-snr:200
"""

import argparse
import time
from pathlib import Path

import jax
import numpy as np
from bench_smc_bimodal import T_EPS, bimodal_problem

RESULTS = Path(__file__).parent / "results"


def parse_config(text: str) -> tuple[str, int]:
    grid, _, steps = text.partition(":")
    if not steps.isdigit() or int(steps) < 1:
        raise argparse.ArgumentTypeError(f"expected GRID:STEPS such as log-snr:50; got {text!r}")
    return grid, int(steps)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--particles", type=int, default=1024)
    parser.add_argument(
        "--configs", type=parse_config, nargs="+",
        default=[("uniform", 50), ("log-snr", 50), ("uniform", 200), ("log-snr", 200)],
    )
    parser.add_argument("--out", default=str(RESULTS / "smc_time_grid.md"))
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    from numpyro_fsdiff._io import write_text
    from numpyro_fsdiff.inverse import SMC, GaussianLikelihood

    problem = bimodal_problem()
    score, grid = problem.score, problem.grid
    likelihood = GaussianLikelihood(problem.y, problem.operator, grid, problem.sigma)
    responsibilities = jax.vmap(score.responsibilities, in_axes=(0, None))
    exact_means = np.asarray(problem.component_means).reshape(2, -1)
    rows = []
    for kind, steps in args.configs:
        sampler = SMC(
            score, problem.sde, num_particles=args.particles, steps=steps, time_grid=kind
        )
        weights, means, log_z, ess, seconds = [], [], [], [], []
        for r in range(args.runs):
            tick = time.perf_counter()
            out = sampler.run_likelihood(likelihood, grid, key=jax.random.key(100 + r))
            seconds.append(time.perf_counter() - tick)
            resp = responsibilities(out.particles, T_EPS)  # (N, 2)
            mass = out.weights @ resp
            flat = out.particles.reshape(args.particles, -1)
            means.append(np.asarray((resp * out.weights[:, None]).T @ flat / mass[:, None]))
            weights.append(float(mass[0]))
            log_z.append(float(out.log_evidence))
            ess.append(float(out.ess[-1]))
        se = lambda v: np.std(v, ddof=1, axis=0) / np.sqrt(args.runs)  # noqa: E731
        z = (np.mean(means, axis=0) - exact_means) / se(np.array(means))
        rows.append(
            f"| {kind} | {steps} | {np.mean(weights):.4f} +- {se(weights):.4f} | "
            f"{np.mean(log_z):.3f} +- {se(log_z):.3f} | "
            f"{(np.mean(log_z) - problem.log_evidence) / se(log_z):+.1f} | "
            f"{np.max(np.abs(z)):.1f} | {np.median(ess):.0f} | {np.median(seconds):.1f} |"
        )
        print(rows[-1], flush=True)
    text = "\n".join(
        [
            "# SMC: time grid and step count on the bimodal problem",
            "",
            f"Command: `python benchmarks/bench_smc_time_grid.py --runs {args.runs} "
            f"--particles {args.particles} --configs "
            + " ".join(f"{k}:{s}" for k, s in args.configs)
            + "` (float64, the shared 2-core CPU).",
            "",
            f"Closed forms at t_eps: weight of component 1 {float(problem.weights[0]):.4f}, "
            f"log p(y) {problem.log_evidence:.3f}. z: the mean over runs minus the closed "
            "form, over its standard error.",
            "",
            "| grid | steps | weight of component 1 | log-evidence | z of log-evidence "
            "| max abs z, component means | median final ESS | s per run |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    write_text(Path(args.out), text)
    print(text)


if __name__ == "__main__":
    main()
