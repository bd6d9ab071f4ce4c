"""A sample depends only on its key: drawn alone or inside a batch, with every noise source."""

import jax
import numpy as np

import numpyro_fsdiff as fs
from numpyro_fsdiff.covariance import Matern

GRID = fs.Grid((8, 8))


def test_predictor_corrector_sample_depends_only_on_its_key(predictor="euler"):
    sde = fs.VPSDE(Matern(2.0, 3.0))
    score = fs.GaussianScore(Matern(1.5, 2.0, 2.0), sde, GRID)
    kwargs = dict(method="pc", solver=predictor, steps=5, corrector_steps=2)
    key = jax.random.key(11)
    batch, _ = fs.sample(score, sde, GRID, key=key, num_samples=3, **kwargs)
    for i, k in enumerate(jax.random.split(key, 3)):
        alone, _ = fs.sample_one(score, sde, GRID, key=k, **kwargs)
        np.testing.assert_allclose(alone, batch[i], rtol=1e-5, atol=1e-5)
    # The corrector's noise is really drawn: other corrector keys give other samples.
    other, _ = fs.sample(score, sde, GRID, key=jax.random.key(12), num_samples=3, **kwargs)
    assert float(np.max(np.abs(other - batch))) > 1e-2

