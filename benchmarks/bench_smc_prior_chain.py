"""SMC's prior chain against `fsd.sample`'s with the learned MNIST prior, without data.

With a flat likelihood SMC's particles are draws of its prior chain (the Euler-Maruyama chain
on `--steps` log-SNR steps). This compares the SBC's scalar summaries (bench_smc_sbc.py) of
`--num` such particles with `--num` draws of the same chain by `fsd.sample` at `--size`:
means with standard errors and the two-sample Kolmogorov-Smirnov p-value per summary.

    python benchmarks/bench_smc_prior_chain.py --num 512 --size 16 --steps 25
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from bench_smc_sbc import NAMES, model_truths, summaries
from scipy import stats


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=512)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0,
                        help="SMC's key; fsd.sample's is seed + 1 (draws of a larger --num "
                        "with the same seed extend those of a smaller one)")
    args = parser.parse_args(argv)

    import numpyro_fsdiff as fsd
    from numpyro_fsdiff.inverse import SMC

    ckpt = fsd.pretrained("mnist")
    grid = ckpt.grid((args.size, args.size))
    solver = fsd.SolverConfig(solver="euler", steps=args.steps, time_grid="log-snr")
    draws = model_truths(ckpt.model, ckpt.sde, grid, seed=args.seed + 1, num=args.num,
                         solver=solver)
    sampler = SMC(ckpt.model, ckpt.sde, num_particles=args.num, steps=args.steps,
                  batch_size=128, ess_threshold=0.0)
    out = sampler.run_likelihood(lambda x: 0.0 * jnp.sum(x), grid, key=jax.random.key(args.seed))
    a, b = np.asarray(summaries(draws)), np.asarray(summaries(out.particles))
    se = np.sqrt(args.num)
    for j, name in enumerate(NAMES):
        print(f"{name}: fsd.sample {a[:, j].mean():.4f} +- {a[:, j].std() / se:.4f}, "
              f"SMC {b[:, j].mean():.4f} +- {b[:, j].std() / se:.4f}, "
              f"KS p {stats.ks_2samp(a[:, j], b[:, j]).pvalue:.3g}")


if __name__ == "__main__":
    main()
