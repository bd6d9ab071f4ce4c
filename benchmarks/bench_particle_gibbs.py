"""Particle Gibbs with the learned MNIST prior: do the chains mix?

Deblurring (Gaussian blur of width 1.5/28, noise 0.1) of one field drawn from the prior SMC
targets (the Euler-Maruyama reverse chain of the shipped MNIST score, no denoising), on a
small grid; `--chains` chains of `--sweeps` conditional SMC sweeps. Reports each chain's
update rate (sweeps that changed the reference at T), ArviZ's R-hat and bulk ESS of the field
and its summaries, and the truth's 90% coverage by the pooled draws.

    python benchmarks/bench_particle_gibbs.py --size 16 --particles 32 --steps 25 \
        --chains 4 --sweeps 20
"""

import argparse
import json
from pathlib import Path

import jax
import numpy as np

from numpyro_fsdiff._io import write_text

RESULTS = Path(__file__).parent / "results"


def run(args):
    import numpyro_fsdiff as fsd
    from numpyro_fsdiff.diagnostics import summarize
    from numpyro_fsdiff.inverse import SMC, GaussianBlur, GaussianLikelihood, ParticleGibbs

    ckpt = fsd.pretrained("mnist")
    grid = ckpt.grid((args.size, args.size))
    operator, sigma = GaussianBlur(1.5 / 28), args.sigma
    solver = fsd.SolverConfig(solver="euler", steps=args.steps, time_grid=args.time_grid)
    truth, _ = fsd.sample(
        ckpt.model, ckpt.sde, grid, key=jax.random.key(args.seed), num_samples=1,
        method="sde", solver=solver, denoise=False,
    )
    truth = truth[0]
    y = operator(truth, grid) + sigma * jax.random.normal(
        jax.random.key(args.seed + 1), operator.data_shape(grid)
    )
    smc = SMC(
        ckpt.model, ckpt.sde, num_particles=args.particles, steps=args.steps,
        batch_size=args.particles, time_grid=args.time_grid,
    )
    sampler = ParticleGibbs(smc, num_sweeps=args.sweeps, num_chains=args.chains)
    out = sampler.run_likelihood(
        GaussianLikelihood(y, operator, grid, sigma), grid, key=jax.random.key(args.seed + 2)
    )
    summary = summarize(out.to_datatree(grid))
    draws = np.asarray(out.draws).reshape((-1,) + grid.shape)
    low, high = np.quantile(draws, [0.05, 0.95], axis=0)
    coverage = float(np.mean((np.asarray(truth) >= low) & (np.asarray(truth) <= high)))
    return {
        "settings": vars(args),
        "update_rate": [float(r) for r in out.update_rate],
        "summary": summary["variables"],
        "coverage90": coverage,
        "wall_time_s": out.wall_time_s,
        "score_evaluations": out.score_evaluations,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--particles", type=int, default=32)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--time-grid", choices=("uniform", "log-snr", "edm"), default="log-snr")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--sweeps", type=int, default=20)
    parser.add_argument("--sigma", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "particle_gibbs.json"))
    args = parser.parse_args(argv)
    result = run(args)
    write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
