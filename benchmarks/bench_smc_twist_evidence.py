"""SMC's log-evidence and posterior against closed forms, as the twist variance changes.

The four tasks of `fsdiff invert` (the same operators and noise levels, observed on the 28 x
28 grid) with an exact Gaussian prior in place of the learned one: data N(0, C), C Matern(2,
5) at pixel variance 0.4, under the MNIST model's SDE (as `bench_smc_sbc.py --prior
gaussian`). For each twist variance kappa, SMC runs with `fsdiff invert`'s other settings
(96 particles in 12 islands, 100 log-SNR steps, 2 MALA moves) on data drawn from its own
target, and each replication records

- the error of the log-evidence estimate, log Z_hat - log N(y; 0, A S A^T + sigma^2 I) (S the
  prior's pixel covariance at t_eps), and the spread of the 12 islands' own estimates;
- the ratio of SMC's weighted posterior standard deviation to the exact one, and the 90%
  coverage of the truth.

Since Z_hat is unbiased, E[log Z_hat] - log Z <= 0 (Jensen), and the gap grows with the
variance of log Z_hat: a twist that makes the weights noisier shows here as a more negative
error, next to what it does to the posterior. `--twist-crossover` sets SMC's
`twist_crossover` for every twist variance.

    python benchmarks/bench_smc_twist_evidence.py --twist-variances 0.1 0.25 1 --replications 8
    python benchmarks/bench_smc_twist_evidence.py --tasks inpaint --twist-variances 0.1 \
        --twist-crossover 0.1
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from bench_smc_sbc import gaussian_prior, model_truths, observe, posterior_std_ratio, run_and_write


def data_covariance(operator, eigenvalues, grid, sigma):
    """A S A^T + sigma^2 I, the covariance of the data y, S the pixel covariance with grid
    eigenvalues `eigenvalues` (dense; small grids)."""
    from numpyro_fsdiff import fourier_multiply

    a = operator.matrix(grid)
    rows = fourier_multiply(a.reshape(-1, *grid.shape), eigenvalues / grid.cell_area)
    return a @ rows.reshape(a.shape).T + sigma**2 * jnp.eye(a.shape[0])


def run(args):
    import numpyro_fsdiff as fsd
    from numpyro_fsdiff.cli._tasks import task_operator
    from numpyro_fsdiff.inverse import SMC
    from numpyro_fsdiff.metrics import coverage

    ckpt = fsd.pretrained("mnist")
    grid = ckpt.grid((args.size, args.size))
    score = gaussian_prior(ckpt, grid, tau=5.0, variance=0.4)
    truths = model_truths(
        score, ckpt.sde, grid, seed=args.seed, num=args.replications,
        solver=fsd.SolverConfig(solver="euler", steps=args.steps, time_grid="log-snr"),
    )
    eigenvalues = score.marginal_eigenvalues(1e-3)
    rows = []
    for task in args.tasks:
        operator, sigma = task_operator(task)
        gram = data_covariance(operator, eigenvalues, grid, sigma)  # once per task
        for kappa in args.twist_variances:
            sampler = SMC(
                score, ckpt.sde, num_particles=args.particles, steps=args.steps,
                batch_size=args.particles, move_steps=args.move_steps,
                num_islands=args.islands, twist_variance=kappa,
                twist_crossover=args.twist_crossover,
            )
            for r in range(args.replications):
                y, likelihood, key_smc = observe(truths[r], r, seed=args.seed,
                                                 operator=operator, grid=grid, sigma=sigma)
                out = sampler.run_likelihood(likelihood, grid, key=key_smc)
                exact = float(jax.scipy.stats.multivariate_normal.logpdf(
                    jnp.ravel(y), jnp.zeros(gram.shape[0]), gram))
                rows.append({
                    "task": task,
                    "twist_variance": kappa,
                    "replication": r,
                    "log_evidence_error": float(out.log_evidence) - exact,
                    "island_log_evidence_sd": float(jnp.std(out.island_log_evidence, ddof=1)),
                    "std_ratio": posterior_std_ratio(out, y, operator, eigenvalues, grid, sigma),
                    "coverage_90": float(coverage(out.particles, truths[r], 0.9,
                                                  weights=out.weights)),
                    "final_ess": float(out.ess[-1]),
                })
                print(rows[-1], flush=True)
    summary = []
    for task in args.tasks:
        for kappa in args.twist_variances:
            these = [row for row in rows
                     if row["task"] == task and row["twist_variance"] == kappa]

            def mean_se(name, these=these):
                values = np.array([row[name] for row in these])
                return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))

            summary.append({"task": task, "twist_variance": kappa} | {
                name: mean_se(name) for name in (
                    "log_evidence_error", "island_log_evidence_sd", "std_ratio",
                    "coverage_90", "final_ess",
                )
            })
            print(summary[-1], flush=True)
    return {"settings": vars(args), "summary": summary, "replications": rows}


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", default=["deblur", "inpaint", "superres", "sparse"])
    parser.add_argument("--twist-variances", nargs="+", type=float, default=[0.1, 0.25, 1.0])
    parser.add_argument("--twist-crossover", type=float, default=0.0,
                        help="SMC's twist_crossover")
    parser.add_argument("--replications", type=int, default=8)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--particles", type=int, default=96)
    parser.add_argument("--islands", type=int, default=12)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--move-steps", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    run_and_write(run, parser.parse_args(argv), omitted="replications")


if __name__ == "__main__":
    main()
