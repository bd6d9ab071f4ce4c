"""Log-densities by the probability-flow ODE against exact Gaussian answers.

For Gaussian data N(0, C) (C, Q diagonal in Fourier, eigenvalues c_k, q_k) the marginals are
N(0, V_t) with v_k(t) = m_t^2 c_k + sigma_t^2 q_k, and the PF-ODE is linear per mode:
x_k(t) = sqrt(v_k(t) / v_k(s)) x_k(s). The library's density starts from N(0, Q) at T, so the
law it describes at t_eps is the exact pushforward of N(0, q) by that map: per-mode variance

    s_k = q_k v_k(t_eps) / v_k(T),

which differs from c_k by O(m_T^2) + O(sigma_eps^2). `log_prob` must equal log N(x; 0, S)
to ODE tolerance, and log N(x; 0, C) up to that (computed, small) difference.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_fsdiff import VPSDE, GaussianField, GaussianScore, Grid
from numpyro_fsdiff._covariance import AbstractCovariance
from numpyro_fsdiff._likelihood import (
    ExactDivergence,
    HutchinsonDivergence,
    ProbabilityFlowODE,
)
from numpyro_fsdiff.covariance import Matern


class LowModeBump(AbstractCovariance):
    """C = Q except on the modes with |k|^2 <= kmax2, where c_k = factor * q_k."""

    base: AbstractCovariance
    factor: float = eqx.field(static=True)
    kmax2: int = eqx.field(static=True)

    def eigenvalues(self, grid):
        k1, k2 = grid.wavenumbers()
        low = k1**2 + k2**2 <= self.kmax2
        return self.base.eigenvalues(grid) * jnp.where(low, self.factor, 1.0)

    @property
    def is_trace_class(self):
        return self.base.is_trace_class


def gaussian_log_density(x, spectrum, grid):
    """log N(x; 0, S) of pixel values, S with L2 eigenvalues `spectrum` (FFT, the slow way)."""
    x = np.asarray(x, dtype=np.float64)
    mu = np.asarray(spectrum, dtype=np.float64) / grid.cell_area
    coeffs = np.fft.fft2(x, norm="ortho")
    return -0.5 * (
        np.sum(np.abs(coeffs) ** 2 / mu) + np.sum(np.log(mu)) + x.size * np.log(2 * np.pi)
    )


def pushforward_spectrum(score, sde, t_eps):
    q = sde.covariance.eigenvalues(score.grid)
    return q * score.marginal_eigenvalues(t_eps) / score.marginal_eigenvalues(sde.T)


def setup(shape=(8, 8), data=None):
    grid = Grid(shape)
    q = Matern(alpha=2.0, tau=3.0)
    c = Matern(alpha=2.5, tau=4.0, scale=3.0) if data is None else data
    sde = VPSDE(q)
    return grid, q, c, sde, GaussianScore(c, sde, grid)


def test_exact_divergence_matches_dense_jacobian_trace(x64, key):
    grid = Grid((5, 6))
    a = jax.random.normal(key, (30, 30)) / 5
    fn = lambda u: jnp.tanh(a @ u.reshape(-1)).reshape(grid.shape) + u**2  # noqa: E731
    x = jax.random.normal(jax.random.key(1), grid.shape)
    trace = jnp.trace(jax.jacobian(lambda u: fn(u).reshape(-1))(x).reshape(30, 30))
    for rule in (ExactDivergence(), ExactDivergence(chunk_size=7)):
        value, div = rule(fn, x)
        np.testing.assert_allclose(value, fn(x), rtol=1e-12)
        np.testing.assert_allclose(div, trace, rtol=1e-10)


def test_hutchinson_is_the_probe_average_of_quadratic_forms(x64, key):
    grid = Grid((4, 5))
    a = jax.random.normal(key, (20, 20))
    fn = lambda u: (a @ u.reshape(-1)).reshape(grid.shape)  # noqa: E731
    rule = HutchinsonDivergence.rademacher(jax.random.key(2), grid.shape, num_probes=3)
    _, div = rule(fn, jnp.zeros(grid.shape))
    probes = np.asarray(rule.probes).reshape(3, 20)
    expected = np.mean([p @ np.asarray(a) @ p for p in probes])
    np.testing.assert_allclose(div, expected, rtol=1e-12)
    assert set(np.unique(probes)) == {-1.0, 1.0}


_to_latent = eqx.filter_jit(lambda ode, x: ode.to_latent(x))


def densities(ode, x):
    """(log_prob, log_prob_relative) of one field from one jitted solve (cached across tests)."""
    solution = _to_latent(ode, x)
    base = GaussianField(ode.sde.covariance, ode.grid).log_prob(solution.x)
    return float(base + solution.log_det), float(solution.log_ratio)


def test_log_prob_and_relative_are_the_exact_gaussian_densities(x64, key):
    grid, q, c, sde, score = setup()
    ode = ProbabilityFlowODE(score, sde, grid, rtol=1e-9, atol=1e-9)
    s = pushforward_spectrum(score, sde, ode.t_eps)
    c_eig, q_eig = c.eigenvalues(grid), q.eigenvalues(grid)
    for x in c.sample(key, grid, (3,)):
        log_prob, relative = densities(ode, x)
        exact = gaussian_log_density(x, s, grid)
        reference = gaussian_log_density(x, q_eig, grid)
        np.testing.assert_allclose(log_prob, exact, rtol=0, atol=1e-6)
        np.testing.assert_allclose(relative, exact - reference, rtol=0, atol=1e-6)
        # The base-density approximation is the only difference to N(0, C); it is small.
        versus_c = gaussian_log_density(x, c_eig, grid)
        assert abs(exact - versus_c) < 5e-3
        np.testing.assert_allclose(relative, versus_c - reference, rtol=0, atol=5e-3)
        # a density on R^64 far from that of N(0, Q): the check is not vacuous
        assert abs(log_prob - reference) > 1.0


def test_log_prob_relative_is_stable_under_refinement(x64, key):
    q = Matern(alpha=2.0, tau=3.0)
    c = LowModeBump(q, factor=4.0, kmax2=2)
    coarse, fine = Grid((16, 16)), Grid((32, 32))
    x_coarse = c.sample(key, coarse)
    from numpyro_fsdiff import resample

    x_fine = resample(x_coarse, fine.shape)  # the same band-limited function
    sde = VPSDE(q)
    values, exacts = {}, {}
    for grid, x in ((coarse, x_coarse), (fine, x_fine)):
        score = GaussianScore(c, sde, grid)
        ode = ProbabilityFlowODE(score, sde, grid, rtol=1e-6, atol=1e-6)
        values[grid.shape] = densities(ode, x)[1]
        s = pushforward_spectrum(score, sde, ode.t_eps)
        exact = gaussian_log_density(x, s, grid) - gaussian_log_density(
            x, q.eigenvalues(grid), grid
        )
        exacts[grid.shape] = exact
        np.testing.assert_allclose(values[grid.shape], exact, atol=5e-5)  # rtol 1e-6 solves
    np.testing.assert_allclose(exacts[(16, 16)], exacts[(32, 32)], atol=1e-9)
    np.testing.assert_allclose(values[(16, 16)], values[(32, 32)], atol=5e-5)
    assert abs(values[(16, 16)]) > 0.1  # C and Q really differ on the low modes
    # the Lebesgue densities themselves differ by far more (they live on R^256 and R^1024)
    lebesgue = [GaussianField(q, g).log_prob(u) for g, u in ((coarse, x_coarse), (fine, x_fine))]
    assert abs(lebesgue[0] - lebesgue[1]) > 100.0


def test_hutchinson_log_prob_is_unbiased(x64, key):
    grid, q, c, sde, score = setup((6, 6))
    x = c.sample(key, grid)
    s = pushforward_spectrum(score, sde, 1e-3)
    exact = gaussian_log_density(x, s, grid)
    num = 64
    probes = jax.random.rademacher(jax.random.key(7), (num, 1) + grid.shape, dtype=jnp.float64)

    @eqx.filter_jit
    def one(p):
        ode = ProbabilityFlowODE(
            score, sde, grid, rtol=1e-8, atol=1e-8, divergence=HutchinsonDivergence(p)
        )
        return ode.log_prob(x)

    estimates = np.asarray(jax.lax.map(one, probes))
    standard_error = estimates.std(ddof=1) / np.sqrt(num)
    assert estimates.std() > 1e-3  # each single-probe estimate really is noisy
    assert abs(estimates.mean() - exact) < 4 * standard_error


def test_score_of_wrong_shape_raises():
    grid, q, c, sde, score = setup((4, 4))
    ode = ProbabilityFlowODE(lambda x, t: x[:2], sde, grid)
    with pytest.raises(ValueError, match="`score` must return a field of shape \\(4, 4\\)"):
        ode.log_prob(jnp.zeros((4, 4)))
    with pytest.raises(ValueError, match="`score` must return a field of shape \\(4, 4\\)"):
        ode.to_data(jnp.zeros((4, 4)), with_divergence=False)


def test_configuration_errors():
    grid, q, c, sde, score = setup((4, 4))
    with pytest.raises(ValueError, match="no error estimate"):
        ProbabilityFlowODE(score, sde, grid, solver="euler", rtol=1e-3)
    with pytest.raises(ValueError, match="`t_eps`"):
        ProbabilityFlowODE(score, sde, grid, t_eps=2.0)
    with pytest.raises(ValueError, match="`steps`"):
        ProbabilityFlowODE(score, sde, grid, solver="heun", steps=0)
    with pytest.raises(ValueError, match="`score` must be a callable"):
        ProbabilityFlowODE(3.0, sde, grid)
    with pytest.raises(ValueError, match="`sde` must be"):
        ProbabilityFlowODE(score, "vp", grid)
    with pytest.raises(ValueError, match="`probes`"):
        HutchinsonDivergence(jnp.ones((4, 4)))
    with pytest.raises(ValueError, match="`x` must be one field"):
        ProbabilityFlowODE(score, sde, grid).solve(jnp.zeros((5, 4)), 1e-3, 1.0)


def test_fixed_steps_converge_at_the_solver_order(x64, key):
    grid, q, c, sde, score = setup((4, 4))
    x = c.sample(key, grid)
    exact = gaussian_log_density(x, pushforward_spectrum(score, sde, 1e-3), grid)
    errors = []
    for steps in (16, 32):
        ode = ProbabilityFlowODE(score, sde, grid, solver="heun", steps=steps)
        errors.append(abs(densities(ode, x)[0] - exact))
    slope = np.log(errors[1] / errors[0]) / np.log(2.0)
    np.testing.assert_allclose(slope, -2.0, atol=0.3)  # Heun is second order
