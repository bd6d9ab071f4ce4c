"""SMC's calibration with an exact Gaussian prior: the default twist against the exact one.

The problem of `bench_smc_sbc.py --prior gaussian` (16 x 16, the MNIST model's SDE, data
N(0, C) with C Matern(2, 5) at pixel variance 0.4, Gaussian blur of width 1.5/28, noise
0.1), whose posterior is known in closed form. `--twist exact` replaces the default twist's
covariance of X_0 given x_t, (sigma_t^2/m_t^2) Q, by the exact sigma_t^2 C Q / (m_t^2 C +
sigma_t^2 Q) (dense, through `GaussianLikelihood.twisted`), so that the twist is the exact
p(y | x_t) and every weight that is left comes from the proposal's discretisation. Both
twists run without the exact last step (whose normaliser uses the same method). Each
replication draws the truth from SMC's own target (the Euler-Maruyama chain on the log-SNR
grid) and records the 90% coverage of the truth, the ratio of SMC's weighted posterior
standard deviation to the exact one, and the smallest and final ESS.

    python benchmarks/bench_smc_twist_gaussian.py --twist exact --particles 64 --steps 25
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from bench_smc_sbc import gaussian_prior, model_truths, observe, posterior_std_ratio, run_and_write


def run(args):
    import numpyro_fsdiff as fsd
    from numpyro_fsdiff.inverse import SMC, GaussianBlur, GaussianLikelihood
    from numpyro_fsdiff.metrics import coverage

    ckpt = fsd.pretrained("mnist")
    grid = ckpt.grid((args.size, args.size))
    sde = ckpt.sde
    score = gaussian_prior(ckpt, grid, tau=5.0, variance=0.4)
    operator, sigma = GaussianBlur(1.5 / 28), args.sigma
    rows = operator.matrix(grid)  # (M, N)
    c = score.data_covariance.pixel_eigenvalues(grid)
    q = sde.covariance.pixel_eigenvalues(grid)

    class ExactTwist(GaussianLikelihood):
        def twisted(self, x0, extra, _):
            # extra = sigma_t^2 / m_t^2 (kappa = 1), and m_t^2 + sigma_t^2 = 1 for the VP-SDE
            m2, s2 = 1.0 / (1.0 + extra), extra / (1.0 + extra)
            spread = s2 * c * q / (m2 * c + s2 * q)  # Cov(X_0 | x_t), pixel eigenvalues
            spread_rows = fsd.fourier_multiply(rows.reshape(-1, *grid.shape), spread)
            gamma = sigma**2 * jnp.eye(rows.shape[0]) + rows @ spread_rows.reshape(rows.shape).T
            residual = jnp.ravel(self.y - self.operator(x0, self.grid))
            return jax.scipy.stats.multivariate_normal.logpdf(
                residual, jnp.zeros_like(residual), gamma
            )

    likelihood_class = ExactTwist if args.twist == "exact" else GaussianLikelihood
    sampler = SMC(
        score,
        sde,
        num_particles=args.particles,
        steps=args.steps,
        batch_size=args.particles,
        exact_last_step=False,
    )
    truths = model_truths(
        score, sde, grid, seed=args.seed, num=args.replications,
        solver=fsd.SolverConfig(solver="euler", steps=args.steps, time_grid="log-snr"),
    )
    exact_eigenvalues = score.marginal_eigenvalues(sampler.t_eps)
    rows_out = []
    for r in range(args.replications):
        y, likelihood, key_smc = observe(truths[r], r, seed=args.seed, operator=operator,
                                         grid=grid, sigma=sigma,
                                         likelihood_class=likelihood_class)
        out = sampler.run_likelihood(likelihood, grid, key=key_smc)
        rows_out.append(
            {
                "coverage_90": float(coverage(out.particles, truths[r], 0.9, weights=out.weights)),
                "std_ratio": posterior_std_ratio(out, y, operator, exact_eigenvalues, grid, sigma),
                "min_ess": float(jnp.min(out.ess)),
                "final_ess": float(out.ess[-1]),
                "distinct_ancestors": int(out.num_distinct_ancestors),
            }
        )
        print(r, rows_out[-1], flush=True)
    coverages = np.array([row["coverage_90"] for row in rows_out])
    return {
        "settings": vars(args),
        "coverage_90_mean": float(coverages.mean()),
        "coverage_90_se": float(coverages.std(ddof=1) / np.sqrt(len(coverages))),
        "std_ratio_mean": float(np.mean([row["std_ratio"] for row in rows_out])),
        "min_ess_median": float(np.median([row["min_ess"] for row in rows_out])),
        "final_ess_median": float(np.median([row["final_ess"] for row in rows_out])),
        "distinct_ancestors_median": float(
            np.median([row["distinct_ancestors"] for row in rows_out])
        ),
        "replications": rows_out,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--twist", choices=("default", "exact"), default="default")
    parser.add_argument("--replications", type=int, default=24)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--particles", type=int, default=64)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--sigma", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    run_and_write(run, parser.parse_args(argv), omitted="replications")


if __name__ == "__main__":
    main()
