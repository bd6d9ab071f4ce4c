"""DiffusionPrior as a NumPyro distribution: exactness, transformations, inference.

Reference law: for Gaussian data N(0, C) with the analytic score, the prior's density is that of
the probability-flow pushforward of N(0, Q) at T, per-mode variance
s_k = q_k v_k(t_eps) / v_k(T), v_k(t) = m_t^2 c_k + sigma_t^2 q_k (see test_likelihood.py).
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.diagnostics import effective_sample_size
from numpyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO
from numpyro.infer.autoguide import AutoDelta
from numpyro.infer.reparam import TransformReparam

from numpyro_fsdiff import (
    VPSDE,
    DiffusionPrior,
    GaussianField,
    GaussianScore,
    Grid,
    ProbabilityFlow,
    diagnostics,
    fourier_multiply,
)
from numpyro_fsdiff.covariance import Matern

T_EPS = 1e-3


def gaussian_problem(shape=(4, 4)):
    grid = Grid(shape)
    q = Matern(alpha=1.5, tau=2.0)
    c = Matern(alpha=2.0, tau=1.0, scale=1.0)
    sde = VPSDE(q)
    score = GaussianScore(c, sde, grid)
    spectrum = (
        q.eigenvalues(grid) * score.marginal_eigenvalues(T_EPS) / score.marginal_eigenvalues(sde.T)
    )
    return grid, q, c, sde, score, np.asarray(spectrum, np.float64)


def dense_multiplier(multiplier, grid):
    """The N x N pixel matrix of a Fourier multiplier, column by column."""
    n = grid.size
    eye = jnp.eye(n, dtype=jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    columns = fourier_multiply(eye.reshape((n,) + grid.shape), jnp.asarray(multiplier))
    return np.asarray(columns.reshape(n, n), np.float64).T


_densities = jax.jit(lambda d, v: (d.log_prob(v), d.log_prob_relative(v)))


def test_log_prob_jit_vmap_grad_and_pytree(x64, key):
    grid, q, c, sde, score, s = gaussian_problem()
    prior = DiffusionPrior(score, sde, grid, rtol=1e-9, atol=1e-9)
    sigma = dense_multiplier(s / grid.cell_area, grid)
    xs = c.sample(key, grid, (3,))
    flat = np.asarray(xs).reshape(3, -1)
    _, logdet = np.linalg.slogdet(sigma)
    exact = -0.5 * (
        np.einsum("bi,ij,bj->b", flat, np.linalg.inv(sigma), flat)
        + logdet
        + grid.size * np.log(2 * np.pi)
    )
    # the distribution is a pytree: an argument of jit, over batch axes (vmapped inside)
    log_prob, relative = _densities(prior, xs)
    np.testing.assert_allclose(log_prob, exact, atol=1e-6)
    np.testing.assert_allclose(relative, exact - GaussianField(q, grid).log_prob(xs), atol=1e-6)
    # NumPyro rebuilds it from its leaves without __init__; the static part compares equal,
    # so the jit cache is reused
    leaves, treedef = jax.tree.flatten(prior)
    rebuilt = jax.tree.unflatten(treedef, leaves)
    assert rebuilt.event_shape == grid.shape and rebuilt.batch_shape == ()
    assert jax.tree.structure(rebuilt) == treedef
    np.testing.assert_allclose(_densities(rebuilt, xs)[0], exact, atol=1e-6)
    # the gradient through the ODE solve is the Gaussian's, -Sigma^{-1} x
    grad = jax.jit(jax.grad(lambda v: prior.log_prob(v)))(xs[0])
    np.testing.assert_allclose(
        np.asarray(grad).reshape(-1), -np.linalg.solve(sigma, flat[0]), rtol=1e-5, atol=1e-5
    )


def test_samples_through_predictive_follow_the_prior_law(key):
    grid, q, c, sde, score, s = gaussian_problem()
    prior = DiffusionPrior(score, sde, grid, method="ode")

    def model():
        numpyro.sample("x", prior)

    num = 256
    xs = Predictive(model, num_samples=num)(key)["x"]
    assert xs.shape == (num,) + grid.shape
    power = np.mean(np.abs(np.fft.fft2(np.asarray(xs), norm="ortho")) ** 2, axis=0)
    ratio = power / (s / grid.cell_area)
    # |x_k|^2 / mu_k has mean 1 and variance <= 2 (real modes; complex ones have 1)
    assert np.max(np.abs(ratio - 1)) < 5 * np.sqrt(2 / num)
    wrong = power / np.asarray(q.pixel_eigenvalues(grid))  # the law of N(0, Q) is rejected
    assert np.max(np.abs(wrong - 1)) > 5 * np.sqrt(2 / num)
    assert prior.sample(key, (2, 3)).shape == (2, 3) + grid.shape


def test_hutchinson_prior_is_deterministic(key):
    grid, q, c, sde, score, s = gaussian_problem()
    x = c.sample(key, grid)
    a = DiffusionPrior(
        score, sde, grid, divergence="hutchinson", num_probes=2, key=jax.random.key(1)
    )
    b = DiffusionPrior(
        score, sde, grid, divergence="hutchinson", num_probes=2, key=jax.random.key(2)
    )
    value_a = float(_densities(a, x)[0])
    assert value_a == float(_densities(a, x)[0])
    assert abs(value_a - float(_densities(b, x)[0])) > 1e-4


def test_errors_name_the_argument():
    grid, q, c, sde, score, s = gaussian_problem()
    prior = DiffusionPrior(score, sde, grid)
    with pytest.raises(
        ValueError, match=r"`value` must have shape \(\.\.\., 4, 4\).*got shape \(5, 4\)"
    ):
        prior.log_prob(jnp.zeros((5, 4)))
    with pytest.raises(ValueError, match="`value` contains NaN"):
        prior.log_prob(jnp.full((4, 4), jnp.nan))
    with pytest.raises(ValueError, match="`value` contains NaN"):
        prior.log_prob_relative(jnp.zeros((4, 4)).at[0, 0].set(jnp.inf))
    bad = DiffusionPrior(lambda x, t: jnp.zeros((3, 3)), sde, grid)
    with pytest.raises(
        ValueError, match=r"`score` must return a field of shape \(4, 4\).*\(3, 3\)"
    ):
        bad.log_prob(jnp.zeros((4, 4)))
    with pytest.raises(ValueError, match="`method`"):
        DiffusionPrior(score, sde, grid, method="langevin")
    with pytest.raises(ValueError, match="`grid`"):
        DiffusionPrior(score, sde, (4, 4))
    with pytest.raises(ValueError, match="`divergence`"):
        DiffusionPrior(score, sde, grid, divergence="trace")


# --- a linear-Gaussian inverse problem: y = blur(x) + noise, exact posterior by dense algebra ---

NOISE = 0.1
WIDTH = 0.15


def inverse_problem():
    grid, q, c, sde, score, s = gaussian_problem()
    blur = np.exp(-0.5 * (2 * np.pi * WIDTH) ** 2 * np.asarray(grid.frequencies_squared()))
    x_true = c.sample(jax.random.key(0), grid)
    y = fourier_multiply(x_true, jnp.asarray(blur, jnp.float32)) + NOISE * jax.random.normal(
        jax.random.key(1), grid.shape
    )
    a = dense_multiplier(blur, grid)

    def posterior(prior_spectrum):
        prior_cov = dense_multiplier(prior_spectrum / grid.cell_area, grid)
        precision = np.linalg.inv(prior_cov) + a.T @ a / NOISE**2
        cov = np.linalg.inv(precision)
        return cov @ a.T @ np.asarray(y, np.float64).reshape(-1) / NOISE**2, cov

    return grid, q, sde, score, s, jnp.asarray(blur, jnp.float32), y, posterior


def likelihood(x, blur, y):
    numpyro.sample("y", dist.Normal(fourier_multiply(x, blur), NOISE).to_event(2), obs=y)


def check_posterior(samples, posterior, s, q_spectrum):
    """Mean and pixel variances within 5 standard errors, errors from the samples' ESS."""
    flat = np.asarray(samples, np.float64).reshape(samples.shape[0], -1)
    mean, cov = posterior(s)
    var = np.diag(cov)
    ess_mean = effective_sample_size(flat[None])
    ess_var = effective_sample_size(((flat - mean) ** 2)[None])
    assert np.min(ess_mean) > 50 and np.min(ess_var) > 50
    mean_tol = 5 * np.sqrt(var / ess_mean)
    var_tol = 5 * var * np.sqrt(2 / ess_var)
    assert np.all(np.abs(flat.mean(0) - mean) < mean_tol)
    assert np.all(np.abs(((flat - mean) ** 2).mean(0) - var) < var_tol)
    # the same check would reject the posterior under the reference prior N(0, Q)
    wrong_mean, wrong_cov = posterior(q_spectrum)
    assert np.any(np.abs(wrong_mean - mean) > mean_tol) or np.any(
        np.abs(np.diag(wrong_cov) - var) > var_tol
    )


@pytest.mark.slow  # ~2x the latent test's cost (N JVPs per step for the divergence)
def test_nuts_on_log_prob_recovers_the_exact_posterior():
    grid, q, sde, score, s, blur, y, posterior = inverse_problem()
    prior = DiffusionPrior(score, sde, grid, solver="midpoint", steps=12)

    def model():
        likelihood(numpyro.sample("x", prior), blur, y)

    mcmc = MCMC(NUTS(model, dense_mass=True), num_warmup=150, num_samples=250, progress_bar=False)
    mcmc.run(jax.random.key(2), extra_fields=("energy", "diverging"))
    check_posterior(mcmc.get_samples()["x"], posterior, s, np.asarray(q.eigenvalues(grid)))


def test_nuts_in_the_latent_recovers_the_exact_posterior():
    grid, q, sde, score, s, blur, y, posterior = inverse_problem()
    flow = ProbabilityFlow(score, sde, grid, solver="midpoint", steps=12)
    prior = dist.TransformedDistribution(GaussianField(q, grid), flow)

    def model():
        with numpyro.handlers.reparam(config={"x": TransformReparam()}):
            x = numpyro.sample("x", prior)
        likelihood(x, blur, y)

    mcmc = MCMC(NUTS(model, dense_mass=True), num_warmup=150, num_samples=250, progress_bar=False)
    mcmc.run(jax.random.key(3), extra_fields=("energy", "diverging"))
    samples = mcmc.get_samples()
    assert "x_base" in samples  # inference ran in the Gaussian latent
    check_posterior(samples["x"], posterior, s, np.asarray(q.eigenvalues(grid)))
    # ArviZ traces the model (dimension inference) through the ODE transform
    data = diagnostics.to_datatree(mcmc, grid=grid)
    assert data["posterior"]["x"].dims == ("chain", "draw", "x1", "x2")
    summary = diagnostics.summarize(data, var_names=["x", "x_norm"])
    assert summary["divergences"] == 0 and summary["bfmi"][0] > 0.3
    assert summary["variables"]["x"]["size"] == grid.size
    assert summary["variables"]["x_norm"]["ess_bulk_min"] > 10  # (R-hat needs >= 2 chains)


@pytest.mark.slow
def test_svi_map_in_the_latent_is_the_posterior_mean():
    # For the analytic (linear) flow, the MAP of the latent maps to the Gaussian posterior mean.
    grid, q, sde, score, s, blur, y, posterior = inverse_problem()
    flow = ProbabilityFlow(score, sde, grid, solver="midpoint", steps=12)
    prior = dist.TransformedDistribution(GaussianField(q, grid), flow)

    def model():
        with numpyro.handlers.reparam(config={"x": TransformReparam()}):
            x = numpyro.sample("x", prior)
        likelihood(x, blur, y)

    guide = AutoDelta(model)
    svi = SVI(model, guide, numpyro.optim.optax_to_numpyro(optax.adam(0.02)), Trace_ELBO())
    result = svi.run(jax.random.key(4), 1500, progress_bar=False)
    z = result.params["x_base_auto_loc"]
    mean, cov = posterior(s)
    np.testing.assert_allclose(
        np.asarray(flow(z)).reshape(-1), mean, atol=0.02 * np.sqrt(cov.diagonal().max()) + 2e-3
    )


@pytest.mark.slow
def test_mnist_checkpoint_log_prob_at_28_and_56():
    import numpyro_fsdiff as fs
    from numpyro_fsdiff.data import load_subset

    try:
        ckpt = fs.pretrained("mnist")
    except FileNotFoundError:
        pytest.skip("the pretrained MNIST checkpoint is not installed")
    image = ckpt.from_pixels(jnp.asarray(load_subset().images[0]))
    both = jax.jit(lambda d, x: (d.log_prob(x), d.log_prob_relative(x)))
    relative = {}
    for n in (28, 56):
        grid = ckpt.grid((n, n))
        prior = DiffusionPrior(
            ckpt.model,
            ckpt.sde,
            grid,
            solver="heun",
            steps=8,
            divergence="hutchinson",
            num_probes=2,
            key=jax.random.key(0),
        )
        field = fs.resample(image, (n, n))
        noise = ckpt.covariance.sample(jax.random.key(1), grid)
        log_prob, relative[n] = (float(v) for v in both(prior, field))
        noise_relative = float(both(prior, noise)[1])
        assert np.isfinite(log_prob) and np.isfinite(relative[n])
        # E_p log(p/mu_Q) = KL(p || mu_Q) > 0 > -KL(mu_Q || p) = E_mu_Q log(p/mu_Q): a digit
        # is far more likely relative to N(0, Q) than a draw of N(0, Q) itself
        assert relative[n] > noise_relative


def test_docs_prior_snippet_settings_keep_draws_in_the_data_range():
    """The fixed-step solve of docs/prior.md's first example, on the shipped MNIST prior at the
    page's 12 x 12: its draws stay within 10% of the range of the accurate flow's draws (adaptive
    Tsit5 from the same latents), about the data's [-1, 1]. Heun with 4 *uniform* steps, the
    page's former setting, gave [-8.6, 29.4] here."""
    import pathlib
    import re

    import numpyro_fsdiff as fs

    page = (pathlib.Path(__file__).parents[1] / "docs" / "prior.md").read_text()
    found = re.search(r"^fast = (fs\.SolverConfig\(.*?\))", page, flags=re.M)
    assert found, "docs/prior.md no longer defines `fast = fs.SolverConfig(...)`"
    fast = eval(found.group(1), {"fs": fs})
    ckpt = fs.pretrained("mnist")
    grid = ckpt.grid((12, 12))
    key = jax.random.key(1)
    x = fs.DiffusionPrior(ckpt.model, ckpt.sde, grid, solver=fast).sample(key, (4,))
    ref = fs.DiffusionPrior(ckpt.model, ckpt.sde, grid).sample(key, (4,))
    assert float(jnp.max(jnp.abs(ref))) < 1.5  # the accurate flow is about the data's range
    assert float(jnp.max(x)) <= 1.1 * float(jnp.max(ref)), (float(jnp.max(x)), float(jnp.max(ref)))
    assert float(jnp.min(x)) >= 1.1 * float(jnp.min(ref)), (float(jnp.min(x)), float(jnp.min(ref)))
