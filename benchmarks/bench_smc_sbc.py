"""Simulation-based calibration of SMC with the learned MNIST prior.

Each replication draws a field x from the prior SMC targets (the reverse chain of `--solver`,
Euler-Maruyama by default, with the shipped MNIST score, `steps` steps of `--time-grid`, no
denoising), observes it,
y = A x + sigma * noise (Gaussian blur of width 1.5/28 on the field's grid), runs SMC and
records, for each scalar summary f of the truth (the values at three fixed points, the
spatial mean, the L2 norm), its weighted rank u = sum_i W_i 1[f(x_i) < f(x)] (ties split)
among the particles. If SMC samples the posterior, u is uniform on (0, 1) over
replications; the chi-square test of `--bins` equal bins gives the p-values.

    python benchmarks/bench_smc_sbc.py --replications 100 --size 16 --particles 32 --steps 25

`--time-grid` and `--solver` set the grid and the chain of both the truths and SMC (the
target is that chain's law); `--move-steps` gives SMC that many MALA moves per step;
`--islands` splits the particles into that many independent islands, pooled equally;
`--twist-variance` and `--twist-crossover` set the twist's kappa and crossover.
Each replication also records the 90% coverage of the truth (the fraction of its pixels
inside the weighted 5-95% interval, as the imaging benchmark reports it): on draws from the
model a calibrated sampler averages about 0.9, so the figure separates the sampler's
coverage from the prior's fit to real images.

`--prior gaussian` replaces the learned score by the exact score of Gaussian data N(0, C)
(C Matern, alpha 2, `--gaussian-tau`, pixel variance `--gaussian-variance`) under the same
SDE, with the same operator, noise, grid, particles and steps. Its posterior is known in
closed form, so the run also reports the ratio of SMC's weighted posterior standard
deviation to the exact one (averaged over pixels): it separates what the sampler loses at
this size from what the learned prior adds.
"""

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

RESULTS = Path(__file__).parent / "results"


def summaries(x):
    """The scalar summaries of one field or a batch: three point values, mean, L2 norm."""
    n1, n2 = x.shape[-2:]
    points = [(n1 // 4, n2 // 4), (n1 // 2, n2 // 2), (3 * n1 // 4, n2 // 3)]
    values = [x[..., i, j] for i, j in points]
    values += [jnp.mean(x, axis=(-2, -1)), jnp.sqrt(jnp.mean(x**2, axis=(-2, -1)))]
    return jnp.stack(values, axis=-1)


NAMES = ["x(1/4,1/4)", "x(1/2,1/2)", "x(3/4,1/3)", "mean", "L2 norm"]


def weighted_ranks(particles, weights, truth):
    """u = P_W(f(X) < f(truth)) + P_W(f(X) = f(truth)) / 2 for every summary."""
    fx, ft = summaries(particles), summaries(truth)
    below = weights @ (fx < ft).astype(weights.dtype)
    ties = weights @ (fx == ft).astype(weights.dtype)
    return below + 0.5 * ties


def gaussian_prior(ckpt, grid, tau, variance):
    """The exact score of Gaussian data N(0, C) under the MNIST model's SDE, with C a Matern
    covariance (alpha 2, inverse length `tau`) scaled to the pixel variance `variance`."""
    import numpyro_fsdiff as fsd
    from numpyro_fsdiff.covariance import Matern

    unit = Matern(2.0, tau)
    scale = float(np.sqrt(variance / (unit.trace(grid) / grid.area)))
    return fsd.GaussianScore(Matern(2.0, tau, scale), ckpt.sde, grid)


def model_truths(score, sde, grid, *, seed, num, solver):
    """`num` draws of the chain SMC targets (`solver`, a SolverConfig; no denoising)."""
    import numpyro_fsdiff as fsd

    truths, _ = fsd.sample(score, sde, grid, key=jax.random.key(seed), num_samples=num,
                           method="sde", solver=solver, denoise=False)
    return truths


def observe(truth, replication, *, seed, operator, grid, sigma, likelihood_class=None):
    """Replication `replication`'s data y = A truth + sigma * noise, its likelihood
    (`likelihood_class`, GaussianLikelihood by default), and the key SMC runs with (both keys
    derived from `seed` and the replication)."""
    from numpyro_fsdiff.inverse import GaussianLikelihood

    likelihood_class = likelihood_class or GaussianLikelihood
    key_noise, key_smc = jax.random.split(jax.random.fold_in(jax.random.key(seed), replication))
    y = operator(truth, grid) + sigma * jax.random.normal(key_noise, operator.data_shape(grid))
    return y, likelihood_class(y, operator, grid, sigma), key_smc


def posterior_std_ratio(out, y, operator, eigenvalues, grid, sigma) -> float:
    """SMC's weighted posterior standard deviation over the closed-form one (prior
    eigenvalues `eigenvalues`), each averaged over pixels."""
    from numpyro_fsdiff.inverse import gaussian_posterior

    _, cov = gaussian_posterior(y, operator, eigenvalues, grid, sigma)
    return float(jnp.mean(out.std) / jnp.mean(jnp.sqrt(jnp.diag(cov))))


def run(args):
    import numpyro_fsdiff as fsd
    from numpyro_fsdiff.inverse import SMC, GaussianBlur
    from numpyro_fsdiff.metrics import coverage

    ckpt = fsd.pretrained("mnist")
    grid = ckpt.grid((args.size, args.size))
    operator, sigma = GaussianBlur(1.5 / 28), args.sigma
    if args.prior == "gaussian":
        score = gaussian_prior(ckpt, grid, args.gaussian_tau, args.gaussian_variance)
    else:
        score = ckpt.model
    truths = model_truths(
        score, ckpt.sde, grid, seed=args.seed, num=args.replications,
        solver=fsd.SolverConfig(solver=args.solver, steps=args.steps, time_grid=args.time_grid),
    )
    sampler = SMC(
        score,
        ckpt.sde,
        num_particles=args.particles,
        steps=args.steps,
        batch_size=args.particles,
        time_grid=args.time_grid,
        move_steps=args.move_steps,
        num_islands=args.islands,
        solver=args.solver,
        twist_variance=args.twist_variance,
        twist_crossover=args.twist_crossover,
    )
    if args.prior == "gaussian":
        # the closed-form posterior of the continuous-time law at t_eps; SMC targets the
        # Euler-Maruyama chain's, which is close to it at these steps
        eigenvalues = score.marginal_eigenvalues(sampler.t_eps)
    ranks, ess, ancestors, times, coverages, std_ratios = [], [], [], [], [], []
    ess_per_step = []
    for r in range(args.replications):
        y, likelihood, key_smc = observe(
            truths[r], r, seed=args.seed, operator=operator, grid=grid, sigma=sigma
        )
        out = sampler.run_likelihood(likelihood, grid, key=key_smc)
        ranks.append(np.asarray(weighted_ranks(out.particles, out.weights, truths[r])))
        ess.append(float(out.ess[-1]))
        ess_per_step.append(np.asarray(out.ess))
        ancestors.append(int(out.num_distinct_ancestors))
        times.append(out.wall_time_s)
        coverages.append(float(coverage(out.particles, truths[r], 0.9, weights=out.weights)))
        if args.prior == "gaussian":
            std_ratios.append(posterior_std_ratio(out, y, operator, eigenvalues, grid, sigma))
        print(
            r,
            np.round(ranks[-1], 3),
            f"ESS {ess[-1]:.1f}",
            f"cov90 {coverages[-1]:.2f}",
            *([f"std ratio {std_ratios[-1]:.3f}"] if std_ratios else []),
            f"{times[-1]:.1f} s",
            flush=True,
        )
    ranks = np.array(ranks)
    counts = [
        np.histogram(ranks[:, j], bins=args.bins, range=(0, 1))[0] for j in range(ranks.shape[1])
    ]
    p_values = [float(stats.chisquare(c).pvalue) for c in counts]
    return {
        "settings": vars(args),
        "summaries": NAMES,
        "p_values": p_values,
        "bin_counts": [c.tolist() for c in counts],
        "final_ess_median": float(np.median(ess)),
        # after the initial weighting and each step, at the times below (before resampling)
        "ess_per_step_median": np.median(ess_per_step, axis=0).tolist(),
        "times": np.asarray(out.times).tolist(),
        "distinct_ancestors_median": float(np.median(ancestors)),
        "coverage_90_mean": float(np.mean(coverages)),
        "coverage_90_se": float(np.std(coverages, ddof=1) / np.sqrt(len(coverages))),
        **({"posterior_std_ratio_mean": float(np.mean(std_ratios))} if std_ratios else {}),
        "wall_time_s_median": float(np.median(times[1:] if len(times) > 1 else times)),
        "ranks": ranks.tolist(),
    }


def run_and_write(run, args, omitted):
    """`run(args)`, timed, written to `args.out` (through a temporary file) and printed
    without its bulky `omitted` entry."""
    start = time.perf_counter()
    result = run(args)
    result["total_s"] = time.perf_counter() - start
    out = Path(args.out)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(out)
    print(json.dumps({k: v for k, v in result.items() if k != omitted}, indent=1))


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replications", type=int, default=100)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--particles", type=int, default=32)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--sigma", type=float, default=0.1)
    parser.add_argument("--bins", type=int, default=10)
    parser.add_argument("--time-grid", choices=("uniform", "log-snr", "edm"), default="log-snr")
    parser.add_argument("--move-steps", type=int, default=0)
    parser.add_argument("--islands", type=int, default=1, help="SMC's independent islands")
    parser.add_argument("--twist-variance", type=float, default=1.0, help="SMC's kappa")
    parser.add_argument("--twist-crossover", type=float, default=0.0,
                        help="SMC's twist_crossover")
    parser.add_argument("--solver", choices=("euler", "dpm++2m-sde"), default="euler",
                        help="the prior chain of the truths and of SMC's transitions")
    parser.add_argument(
        "--prior",
        choices=("mnist", "gaussian"),
        default="mnist",
        help="the shipped MNIST score, or the exact score of Gaussian data (same SDE)",
    )
    parser.add_argument("--gaussian-tau", type=float, default=5.0)
    parser.add_argument("--gaussian-variance", type=float, default=0.4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "smc_sbc.json"))
    run_and_write(run, parser.parse_args(argv), omitted="ranks")


if __name__ == "__main__":
    main()
