"""Convergence orders as fitted slopes of log error against log step count, on the Gaussian case:
the exponential integrators (DDIM, DPM-Solver++ 2M/3M) against the closed-form-accurate Tsit5
solve, and the SRK solvers (SRA1, ShARK) in strong error on one Brownian path."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numpyro_fsdiff as fs
from numpyro_fsdiff._solvers import backward_sde_solve_args
from numpyro_fsdiff.covariance import Matern

GRID = fs.Grid((8, 8))


def _problem(grid=GRID):
    sde = fs.VPSDE(Matern(2.0, 3.0))
    return sde, fs.GaussianScore(Matern(1.5, 2.0, 2.0), sde, grid)


def _slope(steps, errors):
    return float(np.polyfit(np.log(steps), np.log(errors), 1)[0])


def _map_errors(key, configs):
    """RMS error of the probability-flow map T -> t_eps on the log-SNR grid for each
    `(solver, steps)` of `configs`, against one closed-form-accurate Tsit5 solve."""
    sde, score = _problem()
    x_T = sde.covariance.sample(key, GRID)
    ref, _ = fs.sample_one(score, sde, GRID, key=key, method="ode", x_T=x_T, denoise=False,
                           solver=fs.SolverConfig("tsit5", rtol=1e-11, atol=1e-11))
    errors = []
    for solver, n in configs:
        x, info = fs.sample_one(score, sde, GRID, key=key, method="ode", x_T=x_T, denoise=False,
                                solver=fs.SolverConfig(solver, steps=n, time_grid="log-snr"))
        assert int(info.num_score_evaluations) == n  # one score evaluation per step
        errors.append(float(jnp.sqrt(jnp.mean((x - ref) ** 2))))
    assert min(errors) > 1e-12  # resolved, not round-off
    return errors


@pytest.mark.parametrize("solver, order", [("ddim", 1), ("dpm++2m", 2)])
def test_exponential_integrators_converge_at_their_order(x64, key, solver, order):
    """The slope over 32..256 log-SNR steps is within 0.35 of -order."""
    steps = [32, 64, 128, 256]
    errors = _map_errors(key, [(solver, n) for n in steps])
    assert abs(_slope(steps, errors) + order) < 0.35, (errors, _slope(steps, errors))


def test_dpm_solver_3m_is_third_order(x64, key):
    """DPM-Solver++(3M) converges at order 3 until its first step's O(h^2) (DDIM, no history
    yet) shows near 1e-6: the slope over 8..32 log-SNR steps is at least 2.8, and at 64 steps
    the error is below a twentieth of 2M's. With half the D2 term (Lu et al.'s reference code)
    the slope is 2.5 and the ratio 1/3 (module notes of _exponential)."""
    steps = [8, 16, 32, 64]
    *errors, error_2m = _map_errors(key, [("dpm++3m", n) for n in steps] + [("dpm++2m", 64)])
    assert _slope(steps[:3], errors[:3]) < -2.8, errors
    assert errors[-1] < error_2m / 20, errors


@pytest.mark.parametrize("order", [0, 4, True])
def test_dpm_solver_order_is_validated(order):
    with pytest.raises(ValueError, match=r"`multistep_order` must be one of \(1, 2, 3\)"):
        fs.DPMSolverPP(multistep_order=order)


def test_exponential_integrators_refuse_density_solves():
    sde, score = _problem()
    ode = fs.ProbabilityFlowODE(score, sde, GRID, solver="dpm++2m", steps=8)
    assert ode.to_data(jnp.ones(GRID.shape), with_divergence=False).x.shape == GRID.shape
    with pytest.raises(ValueError, match=r"`solver`: the exponential integrator"):
        ode.log_prob(jnp.ones(GRID.shape))
    with pytest.raises(ValueError, match=r"`solver` must be one of .* for the SDE"):
        fs.sample(score, sde, GRID, key=jax.random.key(0), num_samples=2, solver="ddim")
    with pytest.raises(ValueError, match=r"`solver`: method='pc' takes"):
        fs.sample(score, sde, GRID, key=jax.random.key(0), num_samples=2, method="pc",
                  solver=fs.DPMSolverPPSDE(), steps=4)


def test_dpm_sde_with_eta_zero_is_the_ode_solver(key):
    """eta = 0 keeps none of the noise: the step is DPM-Solver++(2M)'s for the
    probability-flow ODE, so both give the same map from the same x_T."""
    sde, score = _problem()
    x_T = sde.covariance.sample(key, GRID)
    ode, _ = fs.sample_one(score, sde, GRID, key=key, method="ode", x_T=x_T,
                           solver=fs.SolverConfig("dpm++2m", steps=12, time_grid="log-snr"))
    sde_eta0, _ = fs.sample_one(score, sde, GRID, key=key, method="sde", x_T=x_T,
                                solver=fs.SolverConfig(fs.DPMSolverPPSDE(eta=0.0), steps=12,
                                                       time_grid="log-snr"))
    noisy, _ = fs.sample_one(score, sde, GRID, key=key, method="sde", x_T=x_T,
                             solver=fs.SolverConfig(fs.DPMSolverPPSDE(eta=0.5), steps=12,
                                                    time_grid="log-snr"))
    np.testing.assert_allclose(sde_eta0, ode, rtol=1e-5, atol=1e-5)
    assert float(jnp.max(jnp.abs(noisy - ode))) > 1e-2  # eta > 0 does add noise


@pytest.mark.parametrize("eta", [1.1, -0.5, float("nan")])
def test_dpm_sde_eta_is_validated(eta):
    with pytest.raises(ValueError, match=r"`eta` must be a number in \[0, 1\]"):
        fs.DPMSolverPPSDE(eta=eta)


@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_dpm_sde_sampler_reaches_the_data_law(key, eta):
    """SDE-DPM-Solver++(2M) with 4x the steps: the whitened spectral error of 1000 draws falls
    to within a few sampling errors (1/sqrt(4 n)) of exact draws, for the reverse SDE
    (eta = 1) and for a process keeping half its noise (same marginals)."""
    sde, score = _problem()
    num = 1000
    m, _ = sde.marginal_coefficients(1e-3)
    data = score.data_covariance.eigenvalues(GRID)
    target = m**2 * data**2 / score.marginal_eigenvalues(1e-3)  # Tweedie-denoised p_eps
    errors = []
    for n in (5, 40):
        x, _ = fs.sample(score, sde, GRID, key=key, num_samples=num,
                         solver=fs.SolverConfig(fs.DPMSolverPPSDE(eta=eta), steps=n,
                                                time_grid="log-snr"))
        c_hat = fs.metrics.empirical_spectrum(x, GRID)
        errors.append(float(jnp.sqrt(jnp.mean((jnp.sqrt(c_hat / target) - 1) ** 2))))
    floor = 1 / np.sqrt(4 * num)
    assert errors[0] > 3 * floor and errors[1] < 3 * floor, errors


@pytest.mark.slow  # VirtualBrownianTree solves compile slowly (about 100 s per solver)
@pytest.mark.parametrize("solver, order", [(diffrax.SRA1(), 1.5), (diffrax.ShARK(), 1.5)])
def test_srk_strong_order_on_one_brownian_path(x64, solver, order):
    """Strong error of the reverse SDE T -> 0.1 (backwards, through the s = -t workaround of
    Diffrax issue 598) against the same solver at 2^10 steps on the same VirtualBrownianTree,
    as diffrax/test/test_sde1.py does: the fitted slope is at least the strong order 1.5 for
    additive noise (less 0.2), and at most one more (the drift error's order shows at coarse
    steps). A wrong drift sign would not converge at all."""
    grid = fs.Grid((4, 4))
    sde, score = _problem(grid)
    t0, t1 = sde.T, 0.1

    def solve(key, n):
        key_x, key_w = jax.random.split(key)
        bm = diffrax.VirtualBrownianTree(t1, t0, tol=2**-14, shape=grid.shape, key=key_w,
                                         levy_area=diffrax.SpaceTimeLevyArea)
        terms, s0, s1, ds = backward_sde_solve_args(
            sde.reverse_terms(score, bm, grid), solver, t0, t1, (t1 - t0) / n
        )
        x_T = sde.covariance.sample(key_x, grid)
        sol = diffrax.diffeqsolve(terms, solver, s0, s1, dt0=ds, y0=x_T, max_steps=n + 1,
                                  adjoint=diffrax.ForwardMode())
        return sol.ys[-1]

    keys = jax.random.split(jax.random.key(0), 16)
    ref = jax.vmap(lambda k: solve(k, 2**10))(keys)
    steps = [4, 8, 16, 32]
    errors = [
        float(jnp.mean(jnp.sqrt(jnp.mean((jax.vmap(lambda k: solve(k, n))(keys) - ref) ** 2,
                                         axis=(1, 2)))))
        for n in steps
    ]
    slope = -_slope(steps, errors)
    assert order - 0.2 < slope < order + 1.0, (errors, slope)
