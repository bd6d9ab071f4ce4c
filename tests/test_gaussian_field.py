import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from helpers import dense_pixel_covariance
from jax.scipy.stats import multivariate_normal
from numpyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO
from numpyro.infer.autoguide import AutoDelta

from numpyro_fsdiff import GaussianField, Grid
from numpyro_fsdiff.covariance import Combined, LaplacianPower, Matern, WhiteNoise


@pytest.mark.parametrize("shape", [(4, 4), (5, 5), (3, 6), (7, 4)])
def test_log_prob_equals_dense_multivariate_normal(shape, key, x64):
    grid = Grid(shape, lengths=(1.0, 1.3))
    q = Combined(Matern(alpha=1.5, tau=2.0, scale=2.0), LaplacianPower(alpha=2.0, scale=0.5))
    prior = GaussianField(q, grid)
    x = prior.sample(key, (3,))
    sigma = dense_pixel_covariance(q, grid)
    expected = multivariate_normal.logpdf(x.reshape(3, -1), jnp.zeros(grid.size), sigma)
    np.testing.assert_allclose(prior.log_prob(x), expected, rtol=1e-10)


def test_white_noise_field_is_iid_pixels(key, x64):
    grid = Grid((4, 6), lengths=(2.0, 1.0))
    prior = GaussianField(WhiteNoise(0.5), grid)
    x = jax.random.normal(key, grid.shape)
    pixel_var = 0.25 * grid.size / grid.area
    expected = jnp.sum(jax.scipy.stats.norm.logpdf(x, scale=jnp.sqrt(pixel_var)))
    np.testing.assert_allclose(prior.log_prob(x), expected, rtol=1e-12)
    np.testing.assert_allclose(prior.variance, pixel_var)


def test_sample_moments_match_dense_covariance(key):
    grid = Grid((5, 4))
    q = Matern(alpha=2.0, tau=3.0, scale=10.0)
    num = 20000
    x = GaussianField(q, grid).sample(key, (num,)).reshape(num, -1)
    sigma = dense_pixel_covariance(q, grid)
    empirical = np.asarray(x.T @ x / num)
    # Entrywise standard error of a Gaussian sample covariance: sqrt((s_ii s_jj + s_ij^2) / n).
    d = np.diag(sigma)
    stderr = np.sqrt((np.outer(d, d) + sigma**2) / num)
    assert np.all(np.abs(empirical - sigma) < 5 * stderr)


def test_transformations_jit_vmap_grad_and_pytree(key, x64):
    grid = Grid((4, 5))
    q = Matern(alpha=2.0, tau=2.0, scale=3.0)
    prior = GaussianField(q, grid)
    x = prior.sample(key, (2,))
    lp = prior.log_prob(x)
    np.testing.assert_allclose(jax.jit(lambda d, v: d.log_prob(v))(prior, x), lp, rtol=1e-12)
    np.testing.assert_allclose(jax.vmap(prior.log_prob)(x), lp, rtol=1e-12)
    leaves, treedef = jax.tree_util.tree_flatten(prior)
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    np.testing.assert_allclose(rebuilt.log_prob(x), lp, rtol=1e-12)
    assert rebuilt.event_shape == grid.shape and rebuilt.batch_shape == ()
    # grad log N(x; 0, Sigma) = -Sigma^{-1} x.
    sigma = dense_pixel_covariance(q, grid)
    grad = jax.grad(lambda v: prior.log_prob(v))(x[0])
    np.testing.assert_allclose(grad.ravel(), -np.linalg.solve(sigma, np.asarray(x[0]).ravel()),
                               rtol=1e-8)
    # Differentiable in the covariance parameters too (e.g. to learn the scale).
    dscale = jax.grad(lambda s: GaussianField(Matern(2.0, 2.0, s), grid).log_prob(x[0]))(3.0)
    assert np.isfinite(dscale) and dscale != 0


def test_shape_mismatch_is_a_clear_error():
    prior = GaussianField(Matern(), Grid((4, 4)))
    with pytest.raises(ValueError, match="`value`.*4, 4"):
        prior.log_prob(jnp.zeros((4, 5)))
    with pytest.raises(ValueError, match="covariance"):
        GaussianField("matern", Grid((4, 4)))
    with pytest.raises(ValueError, match="grid"):
        GaussianField(Matern(), (4, 4))


def _denoising_model(prior, y, noise):
    x = numpyro.sample("x", prior)
    numpyro.sample("y", dist.Normal(x, noise).to_event(2), obs=y)


def test_nuts_and_svi_recover_the_exact_gaussian_posterior(key):
    grid = Grid((3, 4))
    q = Matern(alpha=2.0, tau=2.0, scale=4.0)
    prior = GaussianField(q, grid)
    noise = 0.3
    truth = prior.sample(jax.random.key(5))
    y = truth + noise * jax.random.normal(jax.random.key(6), grid.shape)
    sigma = dense_pixel_covariance(q, grid).astype(np.float64)
    gain = sigma @ np.linalg.inv(sigma + noise**2 * np.eye(grid.size))
    post_mean = gain @ np.asarray(y, np.float64).ravel()
    post_var = np.diag(sigma - gain @ sigma)

    mcmc = MCMC(NUTS(_denoising_model), num_warmup=300, num_samples=1500, progress_bar=False)
    mcmc.run(key, prior, y, noise)
    xs = np.asarray(mcmc.get_samples()["x"]).reshape(1500, -1)
    ess = numpyro.diagnostics.effective_sample_size(xs[None])
    np.testing.assert_array_less(np.abs(xs.mean(0) - post_mean), 5 * np.sqrt(post_var / ess))
    # Sample variance: relative standard error sqrt(2 / ess).
    np.testing.assert_array_less(np.abs(xs.var(0) / post_var - 1), 5 * np.sqrt(2 / ess))

    # MAP by SVI with a point-mass guide: for a Gaussian posterior it is the exact mean, and
    # the objective has no sampling noise, so the optimum is reached to high accuracy.
    guide = AutoDelta(_denoising_model)
    svi = SVI(_denoising_model, guide, numpyro.optim.Adam(0.02), Trace_ELBO())
    result = svi.run(jax.random.key(7), 3000, prior, y, noise, progress_bar=False)
    loc = np.asarray(result.params["x_auto_loc"]).ravel()
    np.testing.assert_allclose(loc, post_mean, atol=1e-2 * np.sqrt(post_var).min())
    draws = Predictive(_denoising_model, num_samples=4)(jax.random.key(8), prior, None, noise)
    assert draws["x"].shape == (4, 3, 4) and draws["y"].shape == (4, 3, 4)
