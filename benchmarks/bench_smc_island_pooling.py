"""How to pool independent SMC runs: by their evidence estimates, or with equal weights.

    python benchmarks/bench_smc_island_pooling.py PRIOR N R REPLICATIONS

On the SBC problem of `bench_smc_sbc.py` (16 x 16, blur 1.5/28, noise 0.1, 25 log-SNR steps,
PRIOR `mnist` or `gaussian`, the same truths and data), each replication runs one SMC
population of N particles and R independent runs of N/R particles (other keys), and pools the
R runs two ways: by their evidence, W = Z_r W_r / sum Z, which is exact for any run size, and
with equal weights, W = W_r / R (what `SMC(num_islands=R)` does in one run). It records each
pooling's 90% coverage of the truth, SBC ranks, the posterior spread over the closed form's
(Gaussian prior) and, for the evidence pooling, the ESS of the run weights Z_r / sum Z.
Writes `benchmarks/results/smc_island_pooling_{PRIOR}_N{N}_R{R}.json`.
"""

import json
import sys
from pathlib import Path

import bench_smc_sbc as sbc
import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

STEPS = 25


def pooled_rows(prior, num, islands, replications):
    import numpyro_fsdiff as fsd
    from numpyro_fsdiff.inverse import SMC, GaussianBlur, gaussian_posterior
    from numpyro_fsdiff.metrics import coverage

    ckpt = fsd.pretrained("mnist")
    grid = ckpt.grid((16, 16))
    operator, sigma = GaussianBlur(1.5 / 28), 0.1
    score = sbc.gaussian_prior(ckpt, grid, 5.0, 0.4) if prior == "gaussian" else ckpt.model
    solver = fsd.SolverConfig(solver="euler", steps=STEPS, time_grid="log-snr")
    truths = sbc.model_truths(score, ckpt.sde, grid, seed=0, num=replications, solver=solver)
    one = SMC(score, ckpt.sde, num_particles=num, steps=STEPS, batch_size=num)
    size = num // islands
    small = SMC(score, ckpt.sde, num_particles=size, steps=STEPS, batch_size=size)
    eigenvalues = score.marginal_eigenvalues(one.t_eps) if prior == "gaussian" else None
    rows = {"single": [], "zpool": [], "eqpool": []}
    for r in range(replications):
        y, likelihood, key_smc = sbc.observe(truths[r], r, seed=0, operator=operator, grid=grid,
                                             sigma=sigma)
        out = one.run_likelihood(likelihood, grid, key=key_smc)
        keys = jax.random.split(jax.random.fold_in(key_smc, 7), islands)
        outs = [small.run_likelihood(likelihood, grid, key=k) for k in keys]
        particles = jnp.concatenate([o.particles for o in outs])
        log_z = jnp.array([o.log_evidence for o in outs])
        run_weights = jnp.exp(log_z - jax.scipy.special.logsumexp(log_z))
        by_evidence = jnp.concatenate([w * o.weights for w, o in zip(run_weights, outs)])
        equal = jnp.concatenate([o.weights / islands for o in outs])
        if prior == "gaussian":
            _, cov = gaussian_posterior(y, operator, eigenvalues, grid, sigma)
            exact_std = jnp.mean(jnp.sqrt(jnp.diag(cov)))
        for name, fields, w in (("single", out.particles, out.weights),
                                ("zpool", particles, by_evidence), ("eqpool", particles, equal)):
            flat = fields.reshape(len(w), -1)
            spread = jnp.sqrt(w @ (flat - w @ flat) ** 2)
            rows[name].append(dict(
                rank=np.asarray(sbc.weighted_ranks(fields, w, truths[r])).tolist(),
                cov=float(coverage(fields, truths[r], 0.9, weights=w)),
                std=float(jnp.mean(spread) / exact_std) if prior == "gaussian" else None,
                ess_pool=float(1 / jnp.sum(run_weights**2)) if name == "zpool" else None))
        print(r, {k: round(v[-1]["cov"], 3) for k, v in rows.items()},
              "evidence ESS", round(rows["zpool"][-1]["ess_pool"], 2), flush=True)
    return rows


def main(argv=None):
    prior, num, islands, replications = (argv or sys.argv[1:])[:4]
    num, islands, replications = int(num), int(islands), int(replications)
    rows = pooled_rows(prior, num, islands, replications)
    for name, values in rows.items():
        cov = np.array([v["cov"] for v in values])
        ranks = np.array([v["rank"] for v in values])
        p = [float(stats.chisquare(np.histogram(ranks[:, j], bins=10, range=(0, 1))[0]).pvalue)
             for j in range(ranks.shape[1])]
        std = np.mean([v["std"] for v in values]) if prior == "gaussian" else None
        print(name, f"cov {cov.mean():.3f} +- {cov.std(ddof=1) / np.sqrt(len(cov)):.3f}",
              "std", std, "p", np.round(p, 4).tolist())
    out = Path(__file__).parent / "results" / f"smc_island_pooling_{prior}_N{num}_R{islands}.json"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows) + "\n")
    tmp.replace(out)


if __name__ == "__main__":
    main()
