"""Samplers against the exact Gaussian answers of DESIGN.md sections 4-5."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numpyro_fsdiff as fs
from numpyro_fsdiff._sample import score_evaluations_per_step
from numpyro_fsdiff._sampler_spectrum import (
    euler_maruyama_reference_factor,
    gaussian_euler_maruyama_spectrum,
    gaussian_sampler_spectrum,
)
from numpyro_fsdiff._solvers import DEFAULT_STEPS
from numpyro_fsdiff.covariance import Matern
from numpyro_fsdiff.metrics import empirical_spectrum, gaussian_w2, gaussian_w2_spectra

GRID = fs.Grid((8, 8))
NUM = 1000  # samples for the statistical checks


def _problem():
    sde = fs.VPSDE(Matern(2.0, 3.0))
    # C != Q: rougher and larger than the noise covariance.
    return sde, fs.GaussianScore(Matern(1.5, 2.0, 2.0), sde, GRID)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(solver="rk4"), "`solver`"),
        (dict(method="ode", solver="nope"), "`solver`"),
        (dict(method="langevin"), "`method`"),
        (dict(solver="euler", rtol=1e-3), "no error estimate"),
        (dict(solver="sea", atol=1e-3), "no error estimate"),
        (dict(solver="euler_heun", rtol=1e-3), "no error estimate"),
        (dict(method="ode", solver="euler", rtol=1e-3), "no error estimate"),
        (dict(method="pc", rtol=1e-3), "method='pc'"),
        (dict(steps=0), "`steps`"),
        (dict(t_eps=0.0), "`t_eps`"),
        (dict(t_eps=1.0), "`t_eps`"),
        (dict(t_eps=-1e-3), "`t_eps`"),
        (dict(rtol=-1.0), "`rtol`"),
        (dict(method="pc", corrector_steps=0), "`corrector_steps`"),
        (dict(method="pc", snr=1.5), "`snr`"),
        (dict(method="pc", solver="tsit5"), "`solver`"),
        (dict(method="pc", solver="shark", steps=4), "SRK predictors"),
    ],
)
def test_bad_input_raises(kwargs, match):
    sde, score = _problem()
    with pytest.raises(ValueError, match=match):
        fs.sample(score, sde, GRID, key=jax.random.key(0), num_samples=4, **kwargs)


def test_bad_num_and_start():
    sde, score = _problem()
    with pytest.raises(ValueError, match="`num_samples`"):
        fs.sample(score, sde, GRID, key=jax.random.key(0), num_samples=0)
    with pytest.raises(ValueError, match="`x_T`"):
        fs.sample_one(score, sde, GRID, key=jax.random.key(0), x_T=jnp.zeros((4, 4)))


# ---------------------------------------------------------------- probability-flow ODE


@pytest.mark.parametrize("solver, steps, order", [("euler", 16, 1), ("heun", 8, 2),
                                                  ("tsit5", 4, 4), ("dopri5", 4, 4)])
def test_ode_converges_to_the_exact_linear_map(x64, key, solver, steps, order):
    """The Gaussian PF-ODE maps each mode by sqrt(v_eps / v_T): push one fixed field."""
    sde, score = _problem()
    x_T = sde.covariance.sample(key, GRID)
    spectrum = gaussian_sampler_spectrum(score, method="ode", denoise=False)
    q = np.asarray(sde.covariance.eigenvalues(GRID))
    exact = fs.fourier_multiply(x_T, jnp.asarray(np.sqrt(spectrum / q)))

    def error(n):
        x, info = fs.sample_one(score, sde, GRID, key=key, method="ode", solver=solver, steps=n,
                                x_T=x_T, denoise=False)
        assert int(info.num_accepted_steps) == n and int(info.num_rejected_steps) == 0
        return float(jnp.sqrt(GRID.norm_squared(x - exact) / GRID.norm_squared(exact)))

    coarse, fine = error(steps), error(4 * steps)
    assert coarse > 1e-9  # the discretisation error is resolved, not round-off
    # Error ratio at 4x the steps: 4^-order for an order-`order` method (half an order slack).
    assert fine < coarse * 4.0 ** (-(order - 0.5)), (coarse, fine)


def test_ode_tweedie_denoising_is_exact(x64, key):
    sde, score = _problem()
    x_T = sde.covariance.sample(key, GRID)
    spectrum = gaussian_sampler_spectrum(score, method="ode", denoise=True)
    q = np.asarray(sde.covariance.eigenvalues(GRID))
    exact = fs.fourier_multiply(x_T, jnp.asarray(np.sqrt(spectrum / q)))
    x, info = fs.sample_one(score, sde, GRID, key=key, method="ode", solver="dopri5", rtol=1e-10,
                            atol=1e-10, x_T=x_T)
    np.testing.assert_allclose(x, exact, rtol=1e-6, atol=1e-8 * float(jnp.max(jnp.abs(exact))))


@pytest.mark.parametrize("solver", ["tsit5", "heun"])
def test_ode_adaptive_respects_tolerance(x64, key, solver):
    sde, score = _problem()
    x_T = sde.covariance.sample(key, GRID)
    spectrum = gaussian_sampler_spectrum(score, method="ode", denoise=False)
    q = np.asarray(sde.covariance.eigenvalues(GRID))
    exact = fs.fourier_multiply(x_T, jnp.asarray(np.sqrt(spectrum / q)))
    errors, costs = [], []
    for tol in (1e-3, 1e-6):
        _COUNTER.clear()
        x, info = fs.sample_one(_Counted(score), sde, GRID, key=key, method="ode", solver=solver,
                                rtol=tol, atol=tol, x_T=x_T, denoise=False)
        jax.effects_barrier()
        # The reported cost is the number of score calls, rejected steps included.
        assert int(info.num_score_evaluations) == len(_COUNTER)
        errors.append(float(jnp.max(jnp.abs(x - exact))))
        costs.append(int(info.num_score_evaluations))
        # Global error within a small multiple of the tolerance (scale max|x| ~ 1).
        assert errors[-1] < 20 * tol * max(1.0, float(jnp.max(jnp.abs(exact)))), (tol, errors)
    assert errors[1] < errors[0] / 30 and costs[1] > costs[0]


# ---------------------------------------------------------------- reverse SDE and PC


def _relative_w2(x, spectrum):
    """W2 to N(0, spectrum) relative to sqrt(tr): dominated by the few largest modes."""
    return float(gaussian_w2(x, jnp.asarray(spectrum, x.dtype), GRID)) / np.sqrt(spectrum.sum())


def _whitened_error(x, spectrum):
    """The RMS over modes of sqrt(c_hat_k / c_k) - 1: the W2 of the whitened spectra divided by
    sqrt(N), every mode weighted alike (the discretisation error shows in all of them)."""
    c_hat = empirical_spectrum(x, GRID) / jnp.asarray(spectrum, x.dtype)
    return float(gaussian_w2_spectra(c_hat, jnp.ones_like(c_hat))) / np.sqrt(GRID.size)


# For exact samples E[(sqrt(c_hat/c) - 1)^2] = 1/(4 NUM) per complex mode (1/(2 NUM) for the 4
# real modes of an 8 x 8 grid), so the whitened error of exact samples is about
# 1/sqrt(4 NUM) ~ 0.016 (its square averages 30 independent chi-square pairs: +-25%). An error
# is "resolved" if it is at least three times that.
_FLOOR = 1.0 / np.sqrt(4 * NUM)


@pytest.mark.parametrize(
    "method, solver, steps",
    [("sde", "euler", 8), ("sde", "heun", 2), ("sde", "sra1", 2), ("sde", "shark", 2),
     ("pc", "euler", 8),
     # EulerHeun equals Euler-Maruyama for additive noise; SEA is checked in the slow run.
     pytest.param("sde", "euler_heun", 8, marks=pytest.mark.slow),
     pytest.param("sde", "sea", 8, marks=pytest.mark.slow)],
)
def test_sde_converges_in_law(key, method, solver, steps):
    """W2 between the samples' spectrum and the exact law: clearly smaller at 4x the steps."""
    sde, score = _problem()
    spectrum = gaussian_sampler_spectrum(score, method=method, denoise=True)
    errors = []
    for n in (steps, 4 * steps):
        x, info = fs.sample(score, sde, GRID, key=key, num_samples=NUM, method=method,
                            solver=solver, steps=n)
        assert x.shape == (NUM, 8, 8) and bool(jnp.all(jnp.isfinite(x)))
        assert int(info.num_accepted_steps[0]) == n
        errors.append(_whitened_error(x, spectrum))
    coarse, fine = errors
    assert coarse > 3 * _FLOOR, errors
    assert fine < 0.5 * coarse, errors


@pytest.mark.parametrize("time_grid", ["uniform", "log-snr"])
def test_euler_maruyama_samples_its_exact_discrete_law(key, time_grid):
    """At 8 steps Euler-Maruyama is resolvably off the continuous-time law, and on its own
    discrete law (the exact variance recursion of the chain) to sampling error."""
    sde, score = _problem()
    config = fs.SolverConfig("euler", steps=8, time_grid=time_grid)
    x, _ = fs.sample(score, sde, GRID, key=key, num_samples=NUM, solver=config)
    times = fs.time_grid(sde, sde.T, 1e-3, 8, time_grid)
    discrete = gaussian_euler_maruyama_spectrum(score, times)
    continuous = gaussian_sampler_spectrum(score, method="sde")
    assert _whitened_error(x, continuous) > 3 * _FLOOR
    assert _whitened_error(x, discrete) < 1.5 * _FLOOR


def test_euler_maruyama_spectrum_limits():
    """Fine steps reach the continuous-time law; on a mode whose score is exactly -x (C = Q)
    every step keeps the variance at the fixed point of q' = (1 - beta h/2)^2 q + beta h q."""
    sde, score = _problem()
    times = fs.time_grid(sde, sde.T, 1e-3, 4000, "uniform")
    np.testing.assert_allclose(gaussian_euler_maruyama_spectrum(score, times, denoise=False),
                               gaussian_sampler_spectrum(score, method="sde", denoise=False),
                               rtol=2e-3)
    reference = fs.GaussianScore(sde.covariance, sde, GRID)  # data N(0, Q)
    q = np.asarray(sde.covariance.eigenvalues(GRID))
    one_step = np.array([sde.T, sde.T / 2])
    beta_h = float(sde.beta(sde.T)) * sde.T / 2
    np.testing.assert_allclose(
        gaussian_euler_maruyama_spectrum(reference, one_step, denoise=False),
        q * ((1 - beta_h / 2) ** 2 + beta_h), rtol=1e-6)
    with pytest.raises(ValueError, match="`times`"):
        gaussian_euler_maruyama_spectrum(score, np.array([0.1, 0.5]))
    # On such a mode Euler-Maruyama's bias is about mean(beta h)/4: it halves with the step.
    factors = [euler_maruyama_reference_factor(sde, n) for n in (100, 200, 400)]
    assert 1 < factors[2] < factors[1] < factors[0] < 1.05, factors
    np.testing.assert_allclose((factors[0] - 1) / (factors[1] - 1), 2.0, rtol=0.05)


@pytest.mark.slow  # a VirtualBrownianTree solve compiles slowly (about 40 s of CPU)
def test_sde_adaptive_reaches_the_exact_law(key):
    """ShARK with a PID controller on a VirtualBrownianTree: at rtol = atol = 1e-2 the law is
    exact to sampling error; at 1e-1 it is cheaper and resolvably worse."""
    sde, score = _problem()
    spectrum = gaussian_sampler_spectrum(score, method="sde", denoise=True)
    num = 300
    floor = 1.0 / np.sqrt(4 * num)
    results = {}
    for tol in (1e-1, 1e-2):
        x, info = fs.sample(score, sde, GRID, key=key, num_samples=num, solver="shark",
                            rtol=tol, atol=tol)
        results[tol] = (_whitened_error(x, spectrum), float(jnp.mean(info.num_score_evaluations)))
    assert results[1e-2][0] < 1.5 * floor, results
    assert results[1e-1][0] > 2 * results[1e-2][0], results
    assert results[1e-1][1] < results[1e-2][1], results


def test_default_sample_matches_data_law(key):
    """`sample(score, sde, grid, key, num)` with no options gives the data law N(0, C)."""
    sde, score = _problem()
    x, info = fs.sample(score, sde, GRID, key=key, num_samples=NUM)
    c = np.asarray(score.data_covariance.eigenvalues(GRID))
    assert _relative_w2(x, c) < 3 * _FLOOR
    assert int(info.num_score_evaluations[0]) == DEFAULT_STEPS + 1


# ---------------------------------------------------------------- cost accounting


class _Counted(eqx.Module):
    score: fs.GaussianScore

    def __call__(self, x, t):
        jax.debug.callback(_COUNTER.append, 1)
        return self.score(x, t)


_COUNTER: list = []


@pytest.mark.parametrize(
    "kwargs",
    [dict(solver="sra1", steps=3), dict(method="pc", solver="heun", steps=4, corrector_steps=2)],
)
def test_score_evaluations_are_counted_exactly(key, kwargs):
    sde, score = _problem()
    _COUNTER.clear()
    x, info = fs.sample_one(_Counted(score), sde, GRID, key=key, **kwargs)
    jax.block_until_ready(x)
    jax.effects_barrier()
    assert int(info.num_score_evaluations) == len(_COUNTER)


def test_evaluations_per_step_table():
    assert score_evaluations_per_step(diffrax.Tsit5()) == (6, 1)
    assert score_evaluations_per_step(diffrax.Euler()) == (1, 0)
    assert score_evaluations_per_step(fs.PredictorCorrector(diffrax.Heun(), 3)) == (5, 0)
    with pytest.raises(ValueError, match="`solver`"):
        score_evaluations_per_step(diffrax.ImplicitEuler())


# ---------------------------------------------------------------- batching and resolution


def test_chunking_does_not_change_samples(key):
    sde, score = _problem()
    a, _ = fs.sample(score, sde, GRID, key=key, num_samples=7, steps=5, batch_size=3)
    b, _ = fs.sample(score, sde, GRID, key=key, num_samples=7, steps=5, batch_size=None)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_same_network_samples_at_several_resolutions(key):
    """One set of weights samples at 14, 28 and 56 with shapes and finite values checked."""
    sde = fs.VPSDE(Matern(2.0, 3.0))
    network = _small_network(key)
    score = fs.NoisePredictionScore(network, sde)
    for n in (14, 28, 56):
        grid = fs.Grid((n, n))
        x, info = fs.sample(score, sde, grid, key=key, num_samples=2, method="ode",
                            solver="euler", steps=3)
        assert x.shape == (2, n, n)
        assert bool(jnp.all(jnp.isfinite(x))) and float(jnp.std(x)) > 0
        assert int(info.num_score_evaluations[0]) == 4


def _small_network(key):
    try:
        from numpyro_fsdiff.nn import FNO
    except ImportError:  # pragma: no cover - the FNO lives in another engineer's module
        FNO = None
    if FNO is not None:
        try:
            return FNO(modes=4, width=8, depth=1, key=key)
        except TypeError:
            pass
    return _SpectralToy(key)


class _SpectralToy(eqx.Module):
    """A resolution-independent toy network: a pointwise MLP of (x, t)."""

    mlp: eqx.nn.MLP

    def __init__(self, key):
        self.mlp = eqx.nn.MLP(2, 1, 8, 1, key=key)

    def __call__(self, x, t):
        inputs = jnp.stack([x, jnp.full_like(x, t)], axis=-1)
        return jax.vmap(jax.vmap(self.mlp))(inputs)[..., 0]


def test_solver_comparison_writes_table_and_plot(tmp_path):
    from numpyro_fsdiff.cli._solver_comparison import run_comparison

    configs = [dict(method="sde", solver="euler", steps=n) for n in (4, 200)]
    rows, markdown = run_comparison(tmp_path, resolution=8, num=200, repeats=1,
                                    configurations=configs, progress=False)
    assert [r["score_evaluations"] for r in rows] == [5.0, 201.0]
    assert rows[0]["w2_relative"] > rows[1]["w2_relative"] > 0
    assert all(r["finite"] and r["wall_s"] > 0 for r in rows)
    assert "| sde / euler | 200 steps | 201.0 |" in markdown
    assert "match 200-step Euler-Maruyama" in markdown
    for name in ("solvers.md", "solvers.json", "solvers.png"):
        assert (tmp_path / name).stat().st_size > 0
