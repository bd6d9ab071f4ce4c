import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_fsdiff import VPSDE, GaussianScore, Grid, brownian_motion, fourier_multiply
from numpyro_fsdiff._solvers import levy_area_for, resolve_solver
from numpyro_fsdiff.covariance import LaplacianPower, Matern

GRID = Grid((6, 5))
Q = Matern(alpha=2.0, tau=3.0, scale=9.0)  # tr(Q)/|D| is about 1
C = LaplacianPower(alpha=1.5, scale=4.0, constant_mode=0.5)  # a different data law


def standardised_modes(x, eigenvalues, grid):
    """Unitary Fourier coefficients of x divided by their standard deviations."""
    return jnp.fft.fft2(x, norm="ortho") / jnp.sqrt(eigenvalues / grid.cell_area)


def test_marginal_coefficients_match_the_integrated_schedule(x64):
    sde = VPSDE(Q, beta_min=0.1, beta_max=20.0)
    for t in [0.0, 0.01, 0.3, 1.0]:
        s = np.linspace(0.0, t, 20001)
        integral = np.trapezoid(np.asarray(sde.beta(s)), s)
        mean, std = sde.marginal_coefficients(t)
        np.testing.assert_allclose(mean, np.exp(-0.5 * integral), rtol=1e-8)
        np.testing.assert_allclose(std**2 + mean**2, 1.0, rtol=1e-12)


def test_perturb_has_the_closed_form_law(key):
    sde = VPSDE(Q)
    x0 = jnp.sin(2 * jnp.pi * GRID.coords()[0])
    num, t = 4000, 0.4
    xt, eta = sde.perturb(key, jnp.broadcast_to(x0, (num,) + GRID.shape), t, grid=GRID)
    mean, std = sde.marginal_coefficients(t)
    np.testing.assert_allclose(xt, mean * x0 + std * eta, rtol=1e-5, atol=1e-6)
    z = standardised_modes((xt - mean * x0) / std, Q.eigenvalues(GRID), GRID)
    # Each standardised mode has mean 0 and E|z|^2 = 1: 5-sigma tolerances for `num` draws.
    assert float(jnp.max(jnp.abs(z.mean(0)))) < 5 / np.sqrt(num)
    assert float(jnp.max(jnp.abs(jnp.mean(jnp.abs(z) ** 2, 0) - 1))) < 5 * np.sqrt(2 / num)


@pytest.mark.parametrize("solver,steps", [("euler", 400), ("shark", 20), ("sra1", 20),
                                          ("heun", 100)])
def test_forward_simulation_matches_marginal_mean_and_covariance(solver, steps, key):
    sde = VPSDE(Q)
    x1, x2 = GRID.coords()
    x0 = jnp.cos(2 * jnp.pi * x1) + 0.5 * jnp.sin(2 * jnp.pi * x2)
    t1, num = 0.5, 2000
    keys = jax.random.split(key, num)
    simulate = jax.jit(jax.vmap(lambda k: sde.simulate_forward(x0, t1, key=k, grid=GRID,
                                                               solver=solver, steps=steps)))
    xt = simulate(keys)
    mean, std = sde.marginal_coefficients(t1)
    # Pooled over all modes: mean of z is N(0, 1/(num N)) per mode; E|z|^2 = 1.
    z = standardised_modes((xt - mean * x0) / std, Q.eigenvalues(GRID), GRID)
    assert float(jnp.max(jnp.abs(z.mean(0)))) < 5 / np.sqrt(num)
    second = jnp.mean(jnp.abs(z) ** 2, 0)
    assert float(jnp.max(jnp.abs(second - 1))) < 5 * np.sqrt(2 / num)
    assert abs(float(second.mean()) - 1) < 5 * np.sqrt(2 / (num * GRID.size / 2))


def _reverse_sde_sampler(sde, score, solver, max_steps, t_eps=1e-3):
    """A jitted map (key, num_steps) -> samples at t_eps; one compilation for all step counts."""
    solver = resolve_solver(solver, kind="sde")
    start_law = score.marginal_eigenvalues(sde.T)

    def one(k, steps):
        k0, kw = jax.random.split(k)
        x_T = fourier_multiply(
            jax.random.normal(k0, GRID.shape), jnp.sqrt(start_law / GRID.cell_area)
        )
        bm = brownian_motion(kw, GRID, sde.T, t_eps, levy_area=levy_area_for(solver),
                             dt=(t_eps - sde.T) / steps)
        sol = diffrax.diffeqsolve(sde.reverse_terms(score, bm, GRID), solver, sde.T, t_eps,
                                  dt0=(t_eps - sde.T) / steps, y0=x_T,
                                  adjoint=diffrax.ForwardMode(), max_steps=max_steps)
        return sol.ys[-1]

    return jax.jit(jax.vmap(one, in_axes=(0, None)))


def _spectrum_error(x, target, grid):
    empirical = jnp.mean(jnp.abs(jnp.fft.fft2(x, norm="ortho")) ** 2, 0) * grid.cell_area
    return float(jnp.mean(jnp.abs(empirical / target - 1)))


# SRK solvers (SRA1, ShARK, SEA) are not used backwards in time directly here: diffrax 0.7.2
# mis-signs their drift and Levy area when t0 > t1 (diffrax issue 598); `sample` handles them.
@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_reverse_sde_with_exact_score_reproduces_the_data_spectrum(solver, key):
    sde = VPSDE(Q)
    score = GaussianScore(C, sde, GRID)
    target = score.marginal_eigenvalues(1e-3)  # = m^2 c + sigma^2 q, about c
    num = 3000
    # The Monte Carlo part of the error: mean |chi^2-ratio - 1| is about 0.8 sqrt(2/num).
    mc = 0.8 * np.sqrt(2 / num)
    sampler = _reverse_sde_sampler(sde, score, solver, max_steps=128)
    keys = jax.random.split(key, num)
    errors = [_spectrum_error(sampler(keys, s), target, GRID) for s in (8, 32, 128)]
    assert errors[1] < 0.6 * errors[0]
    assert errors[2] < max(0.6 * errors[1], 2.5 * mc)
    assert errors[2] < 3 * mc


@pytest.mark.parametrize("solver,order", [("euler", 1), ("heun", 2), ("tsit5", 4)])
def test_probability_flow_with_exact_score_is_the_exact_linear_map(solver, order, x64):
    # Per Fourier mode the PF-ODE is linear: x_eps = sqrt(v_eps / v_T) x_T, v_t = m^2 c + s^2 q.
    sde = VPSDE(Q)
    score = GaussianScore(C, sde, GRID)
    t_eps = 1e-2
    x_T = jax.random.normal(jax.random.key(0), GRID.shape)
    multiplier = jnp.sqrt(score.marginal_eigenvalues(t_eps) / score.marginal_eigenvalues(sde.T))
    exact = fourier_multiply(x_T, multiplier)
    term = sde.probability_flow_term(score)

    @jax.jit
    def solve(steps):
        sol = diffrax.diffeqsolve(term, resolve_solver(solver, kind="ode"), sde.T, t_eps,
                                  dt0=(t_eps - sde.T) / steps, y0=x_T, max_steps=200)
        return sol.ys[-1]

    def error(steps):
        x = solve(steps)
        return float(jnp.sqrt(GRID.norm_squared(x - exact) / GRID.norm_squared(exact)))

    errors = np.array([error(s) for s in (50, 100, 200)])
    slopes = -np.diff(np.log(errors)) / np.log(2)
    assert np.all(slopes > order - 0.35), (errors, slopes)
    # Identity flow when the data law is N(0, Q).
    same = GaussianScore(Q, sde, GRID)
    np.testing.assert_allclose(same(x_T, 0.3), -x_T, atol=1e-12)


def test_a_sample_depends_only_on_its_key():
    # Drawn alone, in a vmapped batch or at another batch size: the same key, the same path.
    sde = VPSDE(Q)
    x0 = jnp.cos(2 * jnp.pi * GRID.coords()[0])
    keys = jax.random.split(jax.random.key(3), 4)
    for solver in ("euler", "shark"):
        simulate = lambda k: sde.simulate_forward(  # noqa: E731
            x0, 0.7, key=k, grid=GRID, solver=solver, steps=7
        )
        batch = jax.jit(jax.vmap(simulate))(keys)
        np.testing.assert_allclose(jax.jit(jax.vmap(simulate))(keys[:2]), batch[:2], atol=1e-6)
        np.testing.assert_allclose(simulate(keys[3]), batch[3], atol=1e-6)


def test_stepped_brownian_increments_have_the_right_law(key):
    from numpyro_fsdiff import SteppedBrownianPath

    path = SteppedBrownianPath((20000,), key, 1.0, -0.1, levy_area=diffrax.SpaceTimeLevyArea)
    first = path.evaluate(0.9, 1.0, use_levy=True)
    second = path.evaluate(0.8, 0.9, use_levy=True)
    again = path.evaluate(0.9 + 1e-7, 1.0, use_levy=True)  # the same step, rounded differently
    np.testing.assert_allclose(again.W, first.W * np.sqrt((0.1 - 1e-7) / 0.1), rtol=1e-5)
    n = 20000
    for values, var in [(first.W, 0.1), (first.H, 0.1 / 12), (second.W, 0.1)]:
        assert abs(float(jnp.var(values)) / var - 1) < 5 * np.sqrt(2 / n)
    # Independent steps, and W independent of H.
    assert abs(float(jnp.corrcoef(first.W, second.W)[0, 1])) < 5 / np.sqrt(n)
    assert abs(float(jnp.corrcoef(first.W, first.H)[0, 1])) < 5 / np.sqrt(n)


def test_bad_input_names_the_argument():
    sde = VPSDE(Q)
    x0 = jnp.zeros(GRID.shape)
    with pytest.raises(ValueError, match="`steps`"):
        sde.simulate_forward(x0, 0.5, key=jax.random.key(0), steps=0)
    with pytest.raises(ValueError, match="t1"):
        sde.simulate_forward(x0, 1.5, key=jax.random.key(0))
    with pytest.raises(ValueError, match="`x0`.*NaN"):
        sde.simulate_forward(x0.at[0, 0].set(jnp.nan), 0.5, key=jax.random.key(0))
    with pytest.raises(ValueError, match="`x0`.*shape"):
        sde.perturb(jax.random.key(0), x0, 0.5, grid=Grid((5, 5)))
    with pytest.raises(ValueError, match="`solver`"):
        sde.simulate_forward(x0, 0.5, key=jax.random.key(0), solver="rk4")
    with pytest.raises(ValueError, match="`beta_min`"):
        VPSDE(Q, beta_min=0.0)
    with pytest.raises(ValueError, match="`beta_max`"):
        VPSDE(Q, beta_min=5.0, beta_max=1.0)
    with pytest.raises(ValueError, match="`covariance`"):
        VPSDE("matern")
