"""Record the draws of today's inverse samplers for fixed keys on tiny 8 x 8 problems.

Run once, before a restructuring of `numpyro_fsdiff.inverse`, from the repository root:

    python tests/data/make_inverse_reference.py

It writes tests/data/inverse_reference.npz, which
tests/test_inverse.py::test_samplers_reproduce_the_recorded_draws compares against: the same
key and settings must give the same draws. Double precision throughout.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_fsdiff import VPSDE, GaussianField, GaussianScore, Grid
from numpyro_fsdiff.covariance import Matern
from numpyro_fsdiff.inverse import (
    DPS,
    MAP,
    NUTS,
    SVI,
    Compose,
    GaussianBlur,
    GaussianNoise,
    Mask,
    posterior,
)

OUT = Path(__file__).with_name("inverse_reference.npz")


def problem():
    """The 8 x 8 blur-and-mask problem of the reference draws."""
    grid = Grid((8, 8))
    cov = Matern(alpha=2.0, tau=3.0, scale=3.0)
    operator = Compose(Mask(lambda x1, x2: x1 + x2 < 1.2), GaussianBlur(0.1))
    truth = cov.sample(jax.random.key(0), grid)
    y = operator(truth, grid) + 0.1 * jax.random.normal(
        jax.random.key(1), operator.data_shape(grid)
    )
    return grid, cov, operator, y


def samplers(grid, cov):
    """name -> (prior, sampler) of each recorded run."""
    sde = VPSDE(Matern(alpha=2.0, tau=3.0, scale=1.0))
    score = GaussianScore(cov, sde, grid)
    field = GaussianField(cov, grid)
    return {
        "dps_euler": (None, DPS(score, sde, num_samples=5, steps=12, guidance=0.003, batch_size=2)),
        "dps_normalised": (
            None,
            DPS(score, sde, num_samples=3, steps=6, weighting="normalised", guidance=0.5),
        ),
        "dps_sra1": (None, DPS(score, sde, num_samples=3, steps=6, solver="sra1", guidance=0.003)),
        "map": (field, MAP(num_steps=50, learning_rate=0.05)),
        "svi": (field, SVI("normal", num_steps=50, num_samples=6)),
        "nuts_adapt": (
            field,
            NUTS(num_warmup=20, num_samples=10, num_chains=2, max_tree_depth=3),
        ),
        "nuts_gauss_newton": (
            field,
            NUTS(
                num_warmup=20,
                num_samples=10,
                num_chains=2,
                chain_method="vectorized",
                max_tree_depth=3,
                init="map",
                init_steps=5,
                mass_matrix="gauss_newton",
                metric_points=2,
            ),
        ),
    }


def run(prior, sampler, grid, operator, y):
    """The recorded run (the key was positional when the records were made)."""
    return posterior(
        y, operator, prior, sampler, key=jax.random.key(11), grid=grid, noise=GaussianNoise(0.1)
    )


def main():
    jax.config.update("jax_enable_x64", True)
    grid, cov, operator, y = problem()
    records = {}
    for name, (prior, sampler) in samplers(grid, cov).items():
        result = run(prior, sampler, grid, operator, y)
        records[name] = np.asarray(result.samples)
        for count in ("score_evaluations", "gradient_evaluations"):
            if count in result.info:
                records[f"{name}:{count}"] = np.asarray(result.info[count])
        print(name, records[name].shape, float(jnp.mean(result.samples)))
    np.savez(OUT, **records)


if __name__ == "__main__":
    main()
