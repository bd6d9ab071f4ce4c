"""Particle Gibbs: the conditional SMC sweep, the ancestry, and exactness on a Gaussian case."""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_smc import T_EPS, _gaussian_problem

from numpyro_fsdiff.diagnostics import summarize
from numpyro_fsdiff.inverse import (
    SMC,
    GaussianLikelihood,
    GaussianNoise,
    ParticleGibbs,
    gaussian_posterior,
    posterior,
)
from numpyro_fsdiff.inverse._smc import _smc, trace_path


def test_trace_path_follows_the_ancestors():
    # 3 steps, 3 particles; particle values encode (step, index) as 10 * step + index.
    paths = (10 * jnp.arange(4)[:, None] + jnp.arange(3)[None, :])[:, :, None, None] * 1.0
    indices = jnp.array([[2, 2, 0], [1, 0, 0], [0, 2, 1]])
    # final particle 1 <- step-2 parent 2 <- step-1 parent 0 <- step-0 parent 2
    traced = trace_path(paths, indices, jnp.array(1))
    np.testing.assert_array_equal(traced[:, 0, 0], [2, 10, 22, 31])


def test_conditional_sweep_keeps_the_reference_and_its_own_ancestry():
    grid, sde, score, operator, sigma, y = _gaussian_problem("deblur")
    likelihood = GaussianLikelihood(y, operator, grid, sigma)
    smc = SMC(score, sde, num_particles=6, steps=5, ess_threshold=0.0)
    reference = jax.random.normal(jax.random.key(3), (6,) + grid.shape)
    out = _smc(smc, likelihood, grid, jax.random.key(4), None, reference, True)
    paths, indices = out[8], out[9]
    np.testing.assert_array_equal(paths[:, 0], reference)  # particle 0 is the reference
    np.testing.assert_array_equal(indices[:, 0], 0)  # ... its own ancestor, every step
    assert bool(jnp.all(out[5] == 1))  # resampled at every step, whatever ess_threshold says
    # The reference path is drawn back out when the final pick is particle 0.
    np.testing.assert_array_equal(trace_path(paths, indices, jnp.array(0)), reference)


@pytest.mark.slow
def test_path_bookkeeping_leaves_unconditional_runs_unchanged():
    grid, sde, score, operator, sigma, y = _gaussian_problem("deblur")
    likelihood = GaussianLikelihood(y, operator, grid, sigma)
    smc = SMC(score, sde, num_particles=6, steps=5)
    plain = _smc(smc, likelihood, grid, jax.random.key(4), None)
    kept = _smc(smc, likelihood, grid, jax.random.key(4), None, None, True)
    for a, b in zip(plain, kept[:8], strict=True):
        np.testing.assert_array_equal(a, b)


def test_invalid_arguments_are_named():
    grid, sde, score, *_ = _gaussian_problem("deblur")
    smc = SMC(score, sde, num_particles=4, steps=5)
    with pytest.raises(ValueError, match="`num_chains`"):
        ParticleGibbs(smc, num_chains=0)
    with pytest.raises(ValueError, match="`num_warmup`"):
        ParticleGibbs(smc, num_warmup=-1)


@pytest.mark.slow
def test_chains_sample_the_gaussian_posterior(x64):
    """Particle Gibbs is exact for any particle count; 16 particles keep the chains mixing."""
    grid, sde, score, operator, sigma, y = _gaussian_problem("deblur")
    mean, cov = gaussian_posterior(y, operator, score.marginal_eigenvalues(T_EPS), grid, sigma)
    std = np.sqrt(np.diag(cov)).reshape(grid.shape)
    sampler = ParticleGibbs(
        SMC(score, sde, num_particles=16, steps=50), num_sweeps=50, num_chains=4, num_warmup=2
    )
    out = sampler.run_likelihood(
        GaussianLikelihood(y, operator, grid, sigma), grid, key=jax.random.key(0)
    )
    assert out.draws.shape == (4, 50) + grid.shape
    assert np.all(np.asarray(out.update_rate) > 0.2), out.update_rate
    data = out.to_datatree(grid)
    summary = summarize(data)["variables"]
    assert summary["x_mean"]["rhat_max"] < 1.1 and summary["x_norm"]["rhat_max"] < 1.1, summary
    draws = np.asarray(out.draws).reshape((-1,) + grid.shape)
    z = (draws.mean(axis=0) - np.asarray(mean)) / np.asarray(az.mcse(data, var_names=["x"])["x"])
    assert np.max(np.abs(z)) < 5, np.max(np.abs(z))
    # std: relative standard error about 1 / sqrt(2 ESS) per pixel
    ess = np.asarray(az.ess(data, var_names=["x"])["x"])
    z_std = (draws.std(axis=0) / std - 1) * np.sqrt(2 * ess)
    assert np.max(np.abs(z_std)) < 5, np.max(np.abs(z_std))

    # The front end: unweighted draws with the chains' diagnostics.
    front = posterior(
        y,
        operator,
        None,
        ParticleGibbs(sampler.smc, num_sweeps=3, num_chains=2),
        key=jax.random.key(1),
        grid=grid,
        noise=GaussianNoise(sigma),
    )
    assert front.samples.shape == (6,) + grid.shape and front.weights is None
    assert {"update_rate", "rhat_max", "ess_bulk_min"} <= set(front.diagnostics)
