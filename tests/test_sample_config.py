"""One solver configuration for every solve: validation, defaults, time grids, old call forms."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numpyro_fsdiff as fs
from numpyro_fsdiff._solvers import DEFAULT_STEPS, TIME_GRIDS
from numpyro_fsdiff.covariance import Matern

GRID = fs.Grid((8, 8))


def _problem():
    sde = fs.VPSDE(Matern(2.0, 3.0))
    return sde, fs.GaussianScore(Matern(1.5, 2.0, 2.0), sde, GRID)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(solver="rk4"), r"`solver` must be one of"),
        (dict(solver=3), r"`solver` must be one of"),
        (dict(steps=0), r"`steps` must be an int >= 1"),
        (dict(steps=2.0), r"`steps` must be an int >= 1"),
        (dict(max_steps=0), r"`max_steps` must be an int >= 1"),
        (dict(rtol=float("nan")), r"`rtol` must be a finite number > 0"),
        (dict(atol=float("nan")), r"`atol` must be a finite number > 0"),
        (dict(rtol=1e-3, atol=-1.0), r"`atol` must be a finite number > 0"),
        (dict(time_grid="cosine"), r"`time_grid` must be one of"),
        (dict(time_grid="edm", rtol=1e-3), r"`time_grid`='edm' places fixed steps"),
        (dict(times=[1.0, 0.5, 0.7, 0.001]), r"`times` must be finite and strictly monotone"),
        (dict(times=[1.0]), r"`times` must be a 1-D array of >= 2 times"),
        (dict(times=[1.0, 0.001], steps=3), r"`times` gives the steps itself"),
        (dict(adjoint="forward"), r"`adjoint` must be a diffrax adjoint"),
        (dict(clock="sigma"), r"`clock` must be one of"),
    ],
)
def test_config_rejects_bad_input_naming_the_argument(kwargs, match):
    solver = kwargs.pop("solver", "euler")
    with pytest.raises(ValueError, match=match):
        fs.SolverConfig(solver, **kwargs)


def test_numpy_scalars_are_accepted():
    """np.int64 steps and np.float32 t_eps work everywhere (issue 20, item 6)."""
    sde, score = _problem()
    config = fs.SolverConfig("euler", steps=np.int64(3))
    assert config.steps == 3 and isinstance(config.steps, int)
    x, info = fs.sample(score, sde, GRID, key=jax.random.key(0), num_samples=np.int64(2),
                        steps=np.int64(3), t_eps=np.float32(1e-3))
    assert x.shape == (2, 8, 8) and int(info.num_accepted_steps[0]) == 3
    ode = fs.ProbabilityFlowODE(score, sde, GRID, steps=np.int64(4), solver="heun",
                                t_eps=np.float32(1e-3))
    assert ode.t_eps == pytest.approx(1e-3)
    prior = fs.DiffusionPrior(score, sde, GRID, solver="heun", steps=np.int64(4),
                              t_eps=np.float32(1e-3))
    assert prior.sample(jax.random.key(0)).shape == (8, 8)


def test_prior_tolerance_errors_name_the_tolerance():
    """`DiffusionPrior(atol=nan)` blames `atol`, not `rtol` (issue 20, item 4)."""
    sde, score = _problem()
    with pytest.raises(ValueError, match=r"`atol` must be a finite number > 0"):
        fs.DiffusionPrior(score, sde, GRID, atol=float("nan"))
    with pytest.raises(ValueError, match=r"`rtol` must be a finite number > 0"):
        fs.DiffusionPrior(score, sde, GRID, rtol=0.0)


def test_solver_of_the_wrong_kind_is_rejected():
    sde, score = _problem()
    with pytest.raises(ValueError, match=r"`solver` must be one of .* for the SDE"):
        fs.sample(score, sde, GRID, key=jax.random.key(0), num_samples=2, solver="tsit5")
    with pytest.raises(ValueError, match=r"`solver` must be one of .* for the ODE"):
        fs.ProbabilityFlowODE(score, sde, GRID, solver="shark")
    with pytest.raises(ValueError, match=r"`steps` cannot be given together with `solver`"):
        fs.sample(score, sde, GRID, key=jax.random.key(0), num_samples=2, steps=3,
                  solver=fs.SolverConfig("euler", steps=4))


# ---------------------------------------------------------------- one semantics


def test_euler_without_steps_means_the_same_everywhere():
    """`solver="euler"` without steps: DEFAULT_STEPS fixed steps in `sample` and in the
    probability-flow ODE (it used to be an error in `ProbabilityFlowODE`)."""
    sde, score = _problem()
    _, info = fs.sample_one(score, sde, GRID, key=jax.random.key(0), method="ode",
                            solver="euler", denoise=False)
    assert int(info.num_accepted_steps) == DEFAULT_STEPS
    ode = fs.ProbabilityFlowODE(score, sde, GRID, solver="euler")
    plan = ode.config.plan(sde, sde.T, ode.t_eps, kind="ode")
    assert not plan.adaptive and plan.max_steps == DEFAULT_STEPS
    # ... and the two give the same map.
    x_T = sde.covariance.sample(jax.random.key(1), GRID)
    x, _ = fs.sample_one(score, sde, GRID, key=jax.random.key(0), method="ode", solver="euler",
                         denoise=False, x_T=x_T)
    np.testing.assert_allclose(ode.to_data(x_T, with_divergence=False).x, x, rtol=1e-5,
                               atol=1e-6)
    # Tsit5 without steps is adaptive in both.
    assert fs.SolverConfig("tsit5").is_adaptive("ode")
    assert fs.ProbabilityFlowODE(score, sde, GRID).config.is_adaptive("ode")


def test_prior_sde_sampler_with_tolerances_samples():
    """`DiffusionPrior(method="sde", rtol=...)`: the tolerances go to the density solve, not to
    the Euler sampler, whose `.sample()` used to raise."""
    sde, score = _problem()
    prior = fs.DiffusionPrior(score, sde, GRID, method="sde", steps=20, rtol=1e-4)
    x = prior.sample(jax.random.key(0), (3,))
    assert x.shape == (3, 8, 8) and bool(jnp.all(jnp.isfinite(x)))
    assert prior.ode.config.is_adaptive("ode")
    assert float(prior.ode.config.rtol) == pytest.approx(1e-4)
    assert bool(jnp.isfinite(prior.log_prob(x[0])))
    # An adaptive SDE sampler is a SolverConfig.
    adaptive = fs.DiffusionPrior(score, sde, GRID, method="sde",
                                 solver=fs.SolverConfig("shark", rtol=1e-1))
    assert adaptive._settings.config.adaptive


# ---------------------------------------------------------------- time grids


@pytest.mark.parametrize("kind", TIME_GRIDS)
@pytest.mark.parametrize("t0, t1", [(1.0, 1e-3), (1e-3, 1.0), (0.8, 0.05)])
def test_time_grid_endpoints_and_monotone(kind, t0, t1):
    sde, _ = _problem()
    for steps in (1, 2, 7, 200):
        ts = np.asarray(fs.time_grid(sde, t0, t1, steps, kind))
        assert ts.shape == (steps + 1,)
        assert ts[0] == np.float32(t0) and ts[-1] == np.float32(t1)
        diff = np.diff(ts) * np.sign(t1 - t0)
        assert np.all(diff > 0), (kind, steps, ts)


def test_time_grids_concentrate_steps_near_t_eps():
    """The log-SNR and EDM grids put more of their steps near t_eps than the uniform one, and
    the log-SNR grid is uniform in lambda = log(m_t / sigma_t)."""
    sde, _ = _problem()
    grids = {k: np.asarray(fs.time_grid(sde, 1.0, 1e-3, 20, k)) for k in TIME_GRIDS}
    near = {k: int(np.sum(ts < 0.1)) for k, ts in grids.items()}
    assert near["uniform"] < near["log-snr"] and near["uniform"] < near["edm"], near
    lam = np.asarray(sde.log_snr(jnp.asarray(grids["log-snr"])))
    np.testing.assert_allclose(np.diff(lam), np.full(20, (lam[-1] - lam[0]) / 20), rtol=1e-3)


def test_time_at_log_snr_inverts_log_snr(x64):
    sde, _ = _problem()
    t = jnp.linspace(1e-4, 1.0, 50)
    np.testing.assert_allclose(sde.time_at_log_snr(sde.log_snr(t)), t, rtol=1e-10)


def test_log_snr_grid_needs_positive_times():
    sde, _ = _problem()
    with pytest.raises(ValueError, match=r"`time_grid`='log-snr' needs both ends"):
        fs.time_grid(sde, 0.0, 0.5, 4, "log-snr")


@pytest.mark.parametrize("method, solver", [("ode", "heun"), ("sde", "euler"), ("sde", "shark"),
                                            ("pc", "euler")])
def test_user_times_equal_the_named_grid(method, solver):
    """`times=` through diffrax.StepTo gives the same draws as the named grid it lists; the
    solve takes exactly those steps, for every kind of solve (SRK solvers re-posed in -t)."""
    sde, score = _problem()
    times = np.asarray(fs.time_grid(sde, sde.T, 1e-3, 5, "edm"))
    key = jax.random.key(2)
    a, info = fs.sample(score, sde, GRID, key=key, num_samples=3, method=method,
                        solver=fs.SolverConfig(solver, times=times))
    b, _ = fs.sample(score, sde, GRID, key=key, num_samples=3, method=method,
                     solver=fs.SolverConfig(solver, steps=5, time_grid="edm"))
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert np.all(np.asarray(info.num_accepted_steps) == 5)
    # A non-uniform SDE grid still gives each sample from its key alone.
    one, _ = fs.sample_one(score, sde, GRID, key=jax.random.split(key, 3)[1], method=method,
                           solver=fs.SolverConfig(solver, times=times))
    np.testing.assert_allclose(one, a[1], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- deprecated call forms


def test_old_call_forms_warn_and_give_the_same_draws():
    sde, score = _problem()
    key = jax.random.key(0)
    new, _ = fs.sample(score, sde, GRID, key=key, num_samples=3, steps=4, batch_size=2)
    with pytest.warns(DeprecationWarning, match=r"positionally to sample\(\)"):
        old, _ = fs.sample(score, sde, GRID, key, 3, steps=4, batch_size=2)
    np.testing.assert_array_equal(new, old)
    with pytest.warns(DeprecationWarning, match=r"`num=` is deprecated"):
        fs.sample(score, sde, GRID, key=key, num=3, steps=4)
    with pytest.warns(DeprecationWarning, match=r"`chunk_size=` is deprecated"):
        chunked, _ = fs.sample(score, sde, GRID, key=key, num_samples=3, steps=4, chunk_size=2)
    np.testing.assert_array_equal(new, chunked)
    with pytest.warns(DeprecationWarning, match=r"positionally to sample_one\(\)"):
        fs.sample_one(score, sde, GRID, key, steps=4)
    x0 = jnp.zeros(GRID.shape)
    with pytest.warns(DeprecationWarning, match=r"simulate_forward\(key, x0, t1\)"):
        a = sde.simulate_forward(key, x0, 0.5, steps=4)
    np.testing.assert_array_equal(a, sde.simulate_forward(x0, 0.5, key=key, steps=4))
    with pytest.warns(DeprecationWarning, match=r"DEFAULT_STEPS` is deprecated"):
        assert fs.DEFAULT_STEPS == DEFAULT_STEPS
    with pytest.raises(ValueError, match=r"`key` must be a PRNG key"):
        fs.sample(score, sde, GRID, num_samples=3)
    with pytest.raises(ValueError, match=r"`num_samples` must be an int >= 1"):
        fs.sample(score, sde, GRID, key=key)


def test_solve_runs_a_configured_diffrax_solve():
    """The shared solve helper (for DPS and SMC): a forward SDE on a user's grid."""
    sde, _ = _problem()
    config = fs.SolverConfig("shark", steps=4, time_grid="log-snr")
    plan = config.plan(sde, 0.9, 0.05, kind="sde")
    assert isinstance(plan.controller, diffrax.StepTo)
    brownian = plan.brownian_motion(jax.random.key(0), GRID.shape)
    terms = sde.reverse_terms(lambda x, t: -x, brownian, GRID)
    solution = plan.diffeqsolve(terms, jnp.ones(GRID.shape))
    assert solution.ys.shape == (1, 8, 8) and int(solution.stats["num_steps"]) == 4
    assert bool(jnp.all(jnp.isfinite(solution.ys)))


@pytest.mark.parametrize("method, solver", [("sde", "euler"), ("ode", "heun"),
                                            ("sde", "dpm++2m-sde"), ("ode", "dpm++2m")])
def test_batched_path_gives_the_per_sample_draws(method, solver):
    """The fast path (the batch as one state, the network's `batched(xs, ts)` once per stage)
    gives the draws of the per-sample path, with a network score (FNO) and blocks of 3."""
    from numpyro_fsdiff.nn import FNO

    sde, _ = _problem()
    score = fs.NoisePredictionScore(FNO(modes=4, width=8, depth=1, key=jax.random.key(0)), sde)
    xs = jax.random.normal(jax.random.key(1), (3, 8, 8))
    ts = jnp.asarray([0.1, 0.5, 0.9])
    np.testing.assert_allclose(score.batched(xs, ts), jax.vmap(score)(xs, ts), rtol=1e-5,
                               atol=1e-5)
    config = fs.SolverConfig(solver, steps=5, time_grid="log-snr")
    kwargs = dict(key=jax.random.key(1), num_samples=6, batch_size=3, method=method,
                  solver=config)
    fast, info = fs.sample(score, sde, GRID, as_one_state=True, **kwargs)
    slow, slow_info = fs.sample(score, sde, GRID, as_one_state=False, **kwargs)
    scale = float(jnp.max(jnp.abs(slow)))
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_array_equal(info.num_score_evaluations, slow_info.num_score_evaluations)
    with pytest.raises(ValueError, match=r"`as_one_state`=True needs fixed steps"):
        fs.sample(score, sde, GRID, key=jax.random.key(1), num_samples=2, method="pc",
                  steps=3, as_one_state=True)


# ---------------------------------------------------------------- the log-SNR clock


class _BandLimited(Matern):
    """Matern on |k_i| <= 1, zero above: data that leaves every other mode empty."""

    def eigenvalues(self, grid):
        return super().eigenvalues(grid) * fs.band_mask(grid.shape, 1)


def test_log_snr_clock_gets_the_empty_modes_density_in_few_steps(x64):
    """Refining a band-limited field from 6 x 6 to 10 x 10 adds 64 modes the data leaves empty,
    each adding exactly -log(sigma_eps^2)/2 to log(p/mu_Q) (the flow of N(0, m^2 C +
    sigma^2 Q) is exact). In the time clock their contraction at rate beta/(2 sigma_t^2) needs
    hundreds of steps; in the log-SNR clock 8 Heun steps get it to 1%."""
    sde = fs.VPSDE(Matern(2.5, 3.0))
    data = _BandLimited(1.5, 2.0, 2.0)
    x6 = data.sample(jax.random.key(1), fs.Grid((6, 6)))
    exact = 64 * float(-jnp.log(sde.marginal_coefficients(1e-3)[1]))

    def added(clock, steps):
        values = []
        for n in (6, 10):
            grid = fs.Grid((n, n))
            config = fs.SolverConfig("heun", steps=steps, clock=clock)
            ode = fs.ProbabilityFlowODE(fs.GaussianScore(data, sde, grid), sde, grid,
                                        solver=config)  # fmt: skip
            values.append(float(ode.log_prob_relative(fs.resample(x6, (n, n)))))
        return values[1] - values[0]

    assert abs(added("log-snr", 8) - exact) < 0.01 * exact
    assert abs(added("time", 8) - exact) > 0.5 * exact  # the failure the clock removes


def test_log_snr_clock_flow_converges_to_the_adaptive_map(x64):
    """The probability-flow map in the log-SNR clock: Heun's error falls like h^2 (fitted
    slope over 8-64 steps), towards the map of adaptive Tsit5 in the time clock."""
    sde, score = _problem()
    z = sde.covariance.sample(jax.random.key(2), GRID)
    reference = fs.ProbabilityFlowODE(score, sde, GRID, rtol=1e-10, atol=1e-10).to_data(
        z, with_divergence=False).x  # fmt: skip
    steps = np.array([8, 16, 32, 64])
    errors = []
    for k in steps:
        config = fs.SolverConfig("heun", steps=int(k), clock="log-snr")
        x = fs.ProbabilityFlowODE(score, sde, GRID, solver=config).to_data(
            z, with_divergence=False).x  # fmt: skip
        errors.append(float(jnp.sqrt(jnp.mean((x - reference) ** 2))))
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert 1.7 < slope < 2.5, (slope, errors)


def test_log_snr_clock_samples_and_maps_edm_and_user_times(x64):
    """`sample` takes the clock (ODE); the `"edm"` grid and the user's `times` are mapped to
    the clock, so the same times give the same draws."""
    sde, score = _problem()
    key = jax.random.key(3)
    times = fs.time_grid(sde, sde.T, 1e-3, 6, "edm")

    def draw(**kw):
        config = fs.SolverConfig("heun", clock="log-snr", **kw)
        return fs.sample(score, sde, GRID, key=key, num_samples=2, method="ode", solver=config,
                         denoise=False)  # fmt: skip

    by_name, info = draw(steps=6, time_grid="edm")
    by_times, _ = draw(times=times)
    np.testing.assert_allclose(by_name, by_times, rtol=1e-10, atol=1e-12)
    assert int(np.max(info.num_score_evaluations)) == 12
    uniform, _ = draw(steps=6)
    assert float(jnp.max(jnp.abs(uniform - by_name))) > 1e-6  # the grids differ


@pytest.mark.parametrize("solver, method", [("euler", "sde"), ("ddim", "ode")])
def test_log_snr_clock_is_for_runge_kutta_ode_solves(solver, method):
    sde, score = _problem()
    config = fs.SolverConfig(solver, steps=4, clock="log-snr")
    with pytest.raises(ValueError, match="`clock`='log-snr' re-poses an ODE"):
        fs.sample(score, sde, GRID, key=jax.random.key(0), num_samples=1, method=method,
                  solver=config)  # fmt: skip
