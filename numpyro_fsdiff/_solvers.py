r"""One solver configuration for every solve: the Diffrax solver, the steps, the adjoint.

[`SolverConfig`][numpyro_fsdiff.SolverConfig] is what `sample`, `sample_one`,
`DiffusionPrior`, `ProbabilityFlow`, `ProbabilityFlowODE` and `VPSDE.simulate_forward` take
as `solver=` (a name or a Diffrax solver is a shortcut for `SolverConfig(solver)`), with one set
of defaults, applied here and nowhere else:

- no solver: Euler-Maruyama for SDEs, Tsit5 for ODEs;
- no `steps`, `times` or tolerances: adaptive steps at `rtol = atol = 1e-5` for an ODE solver
  with an error estimate, otherwise `DEFAULT_STEPS = 500` fixed steps (so e.g. `"euler"`
  without steps takes 500 steps in every solve);
- fixed steps on the `"uniform"` time grid;
- `max_steps`: 4096 for adaptive solves (fixed-step solves take exactly their steps);
- the adjoint: `diffrax.ForwardMode()` for samplers (not differentiated),
  `diffrax.RecursiveCheckpointAdjoint()` for densities and flows (reverse mode).

[`SolvePlan`][numpyro_fsdiff.SolvePlan] is a configuration fixed for one solve (its interval,
its kind, its time points); its `brownian_motion` and `diffeqsolve` are the one place a solve
is run, with the time-reversal workaround the SRK solvers need (Diffrax issue 598).
"""

import warnings
from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._custom_types import Array, Float, PRNGKeyArray, ScalarLike
from ._validation import check_positive, is_concrete

_SOLVERS = {
    "euler": diffrax.Euler,
    "heun": diffrax.Heun,
    "midpoint": diffrax.Midpoint,
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "euler_heun": diffrax.EulerHeun,
    "sra1": diffrax.SRA1,
    "shark": diffrax.ShARK,
    "sea": diffrax.SEA,
}
_NAMES = {
    "sde": ("euler", "heun", "euler_heun", "sra1", "shark", "sea"),
    "ode": ("euler", "heun", "midpoint", "tsit5", "dopri5"),
}
SDE_SOLVER_NAMES = _NAMES["sde"]
ODE_SOLVER_NAMES = _NAMES["ode"]
TIME_GRIDS = ("uniform", "log-snr", "edm")
CLOCKS = ("time", "log-snr")

DEFAULT_STEPS = 500
"""Fixed steps of a solve given neither `steps`, `times` nor tolerances (unless adaptive)."""
DEFAULT_TOLERANCE = 1e-5
"""`rtol = atol` of the default adaptive ODE solve."""
DEFAULT_MAX_STEPS = 4096
"""The step limit of adaptive solves."""
EDM_RHO = 7.0
"""The exponent $\\rho$ of the `"edm"` time grid (Karras et al. 2022)."""


def register_solver(name: str, cls: Callable, kinds: tuple[str, ...]) -> None:
    """Make `name` a shortcut for `cls()` (a solver class or factory) in solves of `kinds`."""
    _SOLVERS[name] = cls
    for kind in kinds:
        if name not in _NAMES[kind]:
            _NAMES[kind] = _NAMES[kind] + (name,)


def resolve_solver(solver, *, kind: str) -> diffrax.AbstractSolver:
    """Turn a lower-case name or a Diffrax solver instance into a solver instance.

    **Arguments:**

    - `solver`: a name of `SDE_SOLVER_NAMES` (for `kind="sde"`) or `ODE_SOLVER_NAMES`
      (for `kind="ode"`), or any `diffrax.AbstractSolver`.
    - `kind`: `"sde"` or `"ode"`.

    **Raises:** `ValueError` naming `solver` for an unknown name or a non-solver.
    """
    if isinstance(solver, diffrax.AbstractSolver):
        return solver
    names = _NAMES[kind]
    if isinstance(solver, str) and solver.lower() in names:
        return _SOLVERS[solver.lower()]()
    raise ValueError(
        f"`solver` must be one of {sorted(names)} or a diffrax solver instance for the "
        f"{kind.upper()}; got {solver!r}."
    )


def levy_area_for(solver: diffrax.AbstractSolver) -> type:
    """The Brownian increment type the solver reads: plain increments for Euler-type
    solvers, space-time (or space-time-time) Lévy area for the SRK family (SRA1, ShARK, SEA)."""
    solver = getattr(solver, "predictor", solver)
    if isinstance(solver, diffrax.AbstractSRK):
        if solver.minimal_levy_area is diffrax.AbstractSpaceTimeTimeLevyArea:
            return diffrax.SpaceTimeTimeLevyArea
        return diffrax.SpaceTimeLevyArea
    return diffrax.BrownianIncrement


def has_error_estimate(solver: diffrax.AbstractSolver) -> bool:
    """Whether the solver gives the local error estimate that adaptive stepping needs."""
    if isinstance(solver, diffrax.AbstractAdaptiveSolver):
        return True
    if isinstance(solver, diffrax.AbstractSRK):
        return solver.tableau.b_error is not None
    return False


def _as_int(value):
    """NumPy integers are ints (`np.int64(8)` steps); anything else is left for the checks."""
    if isinstance(value, np.integer):
        return int(value)
    return value


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def time_grid(
    sde, t0: ScalarLike, t1: ScalarLike, steps: int | np.integer, kind: str = "uniform"
) -> Array:
    r"""`steps + 1` step times from `t0` to `t1` (either direction), both ends exact.

    - `"uniform"`: $t_i = t_0 + (t_1 - t_0)\, i / n$.
    - `"log-snr"`: uniform in $\lambda_t = \log(m_t/\sigma_t)$
      ([`VPSDE.log_snr`][numpyro_fsdiff.VPSDE.log_snr]), the clock of the exponential
      integrators (Lu et al. 2022): small steps near $t_\varepsilon$, where the reverse
      dynamics are stiff.
    - `"edm"`: Karras et al. (2022)'s grid, uniform in $\tilde\sigma^{1/\rho}$ with
      $\tilde\sigma_t = \sigma_t / m_t = e^{-\lambda_t}$ and $\rho = 7$: still more steps
      near $t_\varepsilon$.

    **Arguments:**

    - `sde`: the [`VPSDE`][numpyro_fsdiff.VPSDE] whose schedule defines $\lambda_t$.
    - `t0`, `t1`: the start and end of the solve, `t0 != t1`, in $(0, T]$.
    - `steps`: the number of steps, >= 1.
    - `kind`: one of `"uniform"`, `"log-snr"`, `"edm"`.

    **Returns:** an array of shape `(steps + 1,)`, strictly monotone, with `[0] == t0` and
    `[-1] == t1` exactly.

    **Raises:** `ValueError` for an unknown `kind` or `steps < 1`.
    """
    if kind not in TIME_GRIDS:
        raise ValueError(f"`time_grid` must be one of {TIME_GRIDS}; got {kind!r}.")
    steps = _as_int(steps)
    if not _is_int(steps) or steps < 1:
        raise ValueError(f"`steps` must be an int >= 1; got {steps!r}.")
    dtype = jnp.result_type(float)
    t0 = jnp.asarray(t0, dtype)
    t1 = jnp.asarray(t1, dtype)
    u = jnp.linspace(0.0, 1.0, steps + 1, dtype=dtype)
    if kind == "uniform":
        ts = t0 + (t1 - t0) * u
    else:
        lam0, lam1 = sde.log_snr(t0), sde.log_snr(t1)
        if is_concrete(lam0) and is_concrete(lam1) and not (
            np.isfinite(float(lam0)) and np.isfinite(float(lam1))
        ):
            raise ValueError(
                f"`time_grid`={kind!r} needs both ends of the solve in (0, T], where the "
                f"log-SNR is finite; got t0={float(t0)}, t1={float(t1)}."
            )
        if kind == "log-snr":
            lam = lam0 + (lam1 - lam0) * u
        else:
            # sigma~ = exp(-lambda); uniform in sigma~^(1/rho)
            r0, r1 = jnp.exp(-lam0 / EDM_RHO), jnp.exp(-lam1 / EDM_RHO)
            lam = -EDM_RHO * jnp.log(r0 + (r1 - r0) * u)
        ts = sde.time_at_log_snr(lam)
    return ts.at[0].set(t0).at[-1].set(t1)


def check_t_eps(t_eps, T: float) -> float:
    """`t_eps` as a float in $(0, T)$ (NumPy and JAX scalars accepted).

    **Raises:** `ValueError` naming `t_eps`.
    """
    try:
        value = float(t_eps)
    except (TypeError, ValueError):
        raise ValueError(f"`t_eps` must be a float in (0, T={T}); got {t_eps!r}.") from None
    if isinstance(t_eps, bool) or not 0.0 < value < T:
        raise ValueError(f"`t_eps` must lie in (0, T={T}); got {t_eps!r}.")
    return value


class SolverConfig(eqx.Module):
    r"""How to solve a differential equation of the model: solver, steps, adjoint, step limit.

    One object for every solve of the library (`sample`, `sample_one`, `DiffusionPrior`,
    `ProbabilityFlow`, `ProbabilityFlowODE`, `VPSDE.simulate_forward`); a name or a Diffrax
    solver passed as `solver=` is the shortcut `SolverConfig(solver)`. The defaults are those
    of the module docstring: no solver means Euler-Maruyama (SDE) or Tsit5 (ODE); no steps
    means adaptive at `rtol = atol = 1e-5` for an ODE solver with an error estimate, else
    500 fixed steps.

    **Arguments:**

    - `solver`: a name (SDE: `'euler'`, `'heun'`, `'euler_heun'`, `'sra1'`, `'shark'`,
      `'sea'`, `'dpm++2m-sde'`; ODE: `'euler'`, `'heun'`, `'midpoint'`, `'tsit5'`,
      `'dopri5'`, `'ddim'`, `'dpm++2m'`, `'dpm++3m'`), a Diffrax solver instance, or `None`
      (the default of the solve).
    - `steps`: the number of fixed steps, >= 1 (with `rtol`/`atol`: sets the first step).
    - `time_grid`: where fixed steps fall: `"uniform"` (default), `"log-snr"` or `"edm"`
      (see [`time_grid`][numpyro_fsdiff.time_grid]); non-uniform grids run through
      `diffrax.StepTo`.
    - `times`: the user's own step times instead (1-D, strictly monotone, from the start of
      the solve to its end, e.g. from $T$ down to $t_\varepsilon$ for sampling; a solve in
      the other direction runs them reversed); `diffrax.StepTo`.
    - `rtol`, `atol`: tolerances of adaptive steps with `diffrax.PIDController` (a missing
      one takes the other's value); solvers with an error estimate only.
    - `clock`: the variable a Runge-Kutta ODE solve integrates in: `"time"` (default, $t$) or
      `"log-snr"` ($\lambda_t = \log(m_t/\sigma_t)$, the equation re-posed by
      [`LogSNRClock`][numpyro_fsdiff.LogSNRClock]). In $\lambda$ the contraction of the modes
      the data leaves empty, rate $\tfrac12\beta/\sigma_t^2$ in $t$, becomes $m_t^2 \le 1$,
      so fixed steps stay accurate near $t_\varepsilon$; fixed steps are then uniform in
      $\lambda$ (`time_grid` `"uniform"` or `"log-snr"`; `"edm"` and `times` are mapped to
      $\lambda$). ODE solves only, not the exponential integrators (which step in
      $\lambda$ already).
    - `adjoint`: the Diffrax adjoint (`None`: the solve's default, see above).
    - `max_steps`: the step limit of adaptive solves (`None`: 4096); fixed-step solves take
      exactly their steps.
    - `brownian_tol`: the `VirtualBrownianTree` tolerance of adaptive SDE solves (default
      $|t_1 - t_0| / 2^{14}$).

    **Raises:** `ValueError` naming the argument: an unknown solver name, `steps` or
    `max_steps` not an int >= 1, a non-finite or non-positive tolerance, an unknown
    `time_grid`, `times` not strictly monotone, or `times` together with `steps` or
    tolerances.

    !!! example

        ```python
        from numpyro_fsdiff.covariance import Matern

        sde = VPSDE(Matern(2.0, 3.0))
        grid = Grid((8, 8))
        score = GaussianScore(Matern(1.5, 2.0, 2.0), sde, grid)
        config = SolverConfig("heun", steps=10, time_grid="log-snr")
        x, info = sample(score, sde, grid, key=jax.random.key(0), num_samples=4,
                         method="ode", solver=config)
        ```
    """

    solver: diffrax.AbstractSolver | None
    name: str | None = eqx.field(static=True)
    steps: int | np.integer | None = eqx.field(static=True)
    time_grid: str = eqx.field(static=True)
    times: Float[Array, " num_times"] | None
    rtol: Float[Array, ""] | None
    atol: Float[Array, ""] | None
    adjoint: diffrax.AbstractAdjoint | None
    max_steps: int | np.integer | None = eqx.field(static=True)
    brownian_tol: ScalarLike | None = eqx.field(static=True)
    clock: str = eqx.field(static=True)

    def __init__(
        self,
        solver=None,
        *,
        steps=None,
        time_grid="uniform",
        times=None,
        rtol=None,
        atol=None,
        adjoint=None,
        max_steps=None,
        brownian_tol=None,
        clock="time",
    ):
        # Unannotated: every argument is checked, with an error naming it, in __check_init__.
        # Conversion only (shortcut names, NumPy scalars); every check is in __check_init__.
        self.name = None
        if isinstance(solver, str) and solver.lower() in _SOLVERS:
            self.name = solver.lower()
            solver = _SOLVERS[self.name]()
        self.solver = solver
        self.steps = _as_int(steps)
        self.time_grid = time_grid
        self.times = times
        if times is not None and is_concrete(times):
            self.times = jnp.asarray(np.asarray(times), dtype=jnp.result_type(float))
        self.rtol, self.atol = rtol, atol
        self.adjoint = adjoint
        self.max_steps = _as_int(max_steps)
        self.brownian_tol = brownian_tol
        self.clock = clock

    def __check_init__(self):
        if self.clock not in CLOCKS:
            raise ValueError(f"`clock` must be one of {CLOCKS}; got {self.clock!r}.")
        if self.solver is not None and not isinstance(self.solver, diffrax.AbstractSolver):
            raise ValueError(
                f"`solver` must be one of {sorted(_SOLVERS)}, a diffrax solver instance or "
                f"None; got {self.solver!r}."
            )
        if self.steps is not None and (not _is_int(self.steps) or self.steps < 1):
            raise ValueError(f"`steps` must be an int >= 1 or None; got {self.steps!r}.")
        if self.max_steps is not None and (not _is_int(self.max_steps) or self.max_steps < 1):
            raise ValueError(f"`max_steps` must be an int >= 1 or None; got {self.max_steps!r}.")
        if self.time_grid not in TIME_GRIDS:
            raise ValueError(f"`time_grid` must be one of {TIME_GRIDS}; got {self.time_grid!r}.")
        for name in ("rtol", "atol", "brownian_tol"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name))
        if self.adjoint is not None and not isinstance(self.adjoint, diffrax.AbstractAdjoint):
            raise ValueError(f"`adjoint` must be a diffrax adjoint or None; got {self.adjoint!r}.")
        if self.adaptive and self.time_grid != "uniform":
            raise ValueError(
                f"`time_grid`={self.time_grid!r} places fixed steps; it cannot be combined "
                "with `rtol`/`atol` (adaptive steps)."
            )
        if self.times is not None:
            if self.steps is not None or self.adaptive:
                raise ValueError(
                    "`times` gives the steps itself; pass it without `steps`, `rtol` or `atol`."
                )
            if jnp.ndim(self.times) != 1 or jnp.shape(self.times)[0] < 2:
                raise ValueError(
                    f"`times` must be a 1-D array of >= 2 times; got shape "
                    f"{jnp.shape(self.times)}."
                )
            if is_concrete(self.times):
                diff = np.diff(np.asarray(self.times))
                finite = np.all(np.isfinite(np.asarray(self.times)))
                if not finite or not (np.all(diff > 0) or np.all(diff < 0)):
                    raise ValueError(
                        f"`times` must be finite and strictly monotone; got {self.times!r}."
                    )

    def with_solver(self, solver: diffrax.AbstractSolver) -> "SolverConfig":
        """This configuration with another solver instance."""
        return SolverConfig(
            solver,
            steps=self.steps,
            time_grid=self.time_grid,
            times=self.times,
            rtol=self.rtol,
            atol=self.atol,
            adjoint=self.adjoint,
            max_steps=self.max_steps,
            brownian_tol=self.brownian_tol,
            clock=self.clock,
        )

    @property
    def adaptive(self) -> bool:
        """Whether tolerances were given (adaptive steps)."""
        return self.rtol is not None or self.atol is not None

    def resolve_solver(self, kind: str) -> diffrax.AbstractSolver:
        """The solver instance for a solve of `kind` (`"sde"` or `"ode"`), the default if none.

        **Raises:** `ValueError` naming `solver` when a name is not one of that kind.
        """
        if self.solver is None:
            return diffrax.Euler() if kind == "sde" else diffrax.Tsit5()
        if self.name is not None and self.name not in _NAMES[kind]:
            raise ValueError(
                f"`solver` must be one of {sorted(_NAMES[kind])} or a diffrax solver instance "
                f"for the {kind.upper()}; got {self.name!r}."
            )
        return self.solver

    def is_adaptive(self, kind: str) -> bool:
        """Whether a solve of `kind` takes adaptive steps under this configuration."""
        if self.adaptive:
            return True
        if self.steps is not None or self.times is not None:
            return False
        return kind == "ode" and has_error_estimate(self.resolve_solver(kind))

    def plan(
        self,
        sde,
        t0: float,
        t1: float,
        *,
        kind: str,
        default_adjoint: diffrax.AbstractAdjoint | None = None,
    ) -> "SolvePlan":
        """Fix this configuration for one solve from `t0` to `t1` of `kind` (`"sde"`/`"ode"`).

        **Arguments:**

        - `sde`: the [`VPSDE`][numpyro_fsdiff.VPSDE] (its schedule places non-uniform grids).
        - `t0`, `t1`: the interval, either direction.
        - `kind`: `"sde"` or `"ode"`.
        - `default_adjoint`: the adjoint when `adjoint` is None (default `ForwardMode()`).

        **Returns:** a [`SolvePlan`][numpyro_fsdiff.SolvePlan].

        **Raises:** `ValueError` naming `solver` for a solver of the wrong kind or adaptive
        steps with a solver without an error estimate, naming `times` for times that do not
        run from `t0` to `t1`.
        """
        solver = self.resolve_solver(kind)
        adaptive = self.is_adaptive(kind)
        dtype = jnp.result_type(float)
        clock = None
        if self.clock == "log-snr":
            from ._exponential import is_exponential

            if kind != "ode" or is_exponential(solver):
                raise ValueError(
                    "`clock`='log-snr' re-poses an ODE for a Runge-Kutta solver; got a "
                    f"{kind.upper()} solve with {type(solver).__name__}. Use clock='time'."
                )
            clock = LogSNRClock(None, sde, float(t0), float(t1))
        # In the log-SNR clock the solve runs in s from 0 to 1 (LogSNRClock).
        span = 1.0 if clock is not None else float(t1) - float(t0)
        times = None
        if adaptive:
            if not has_error_estimate(solver):
                raise ValueError(
                    f"`solver`={type(solver).__name__} has no error estimate, so adaptive "
                    "stepping (`rtol`/`atol`) is not possible; pass `steps` for fixed steps or "
                    "choose e.g. 'heun', 'sra1', 'shark' (SDE) or 'tsit5', 'dopri5' (ODE)."
                )
            rtol = self.atol if self.rtol is None else self.rtol
            atol = self.rtol if self.atol is None else self.atol
            if rtol is None:
                rtol = atol = DEFAULT_TOLERANCE
            # Arrays, not Python floats, so that a new tolerance does not recompile.
            controller = diffrax.PIDController(
                rtol=jnp.asarray(rtol, dtype), atol=jnp.asarray(atol, dtype)
            )
            dt0 = span / (self.steps if self.steps is not None else 64)
            max_steps = DEFAULT_MAX_STEPS if self.max_steps is None else self.max_steps
            brownian_tol = self.brownian_tol
            if brownian_tol is None:
                brownian_tol = abs(span) / 2**14
        else:
            steps = DEFAULT_STEPS if self.steps is None else self.steps
            if self.times is not None:
                times = self.times.astype(dtype)
                if is_concrete(times):
                    if (float(times[0]) > float(times[-1])) != (float(t0) > float(t1)):
                        times = times[::-1]
                    ends = np.asarray([times[0], times[-1]], dtype=np.float64)
                    tol = 4 * float(jnp.finfo(dtype).eps)
                    if not np.allclose(ends, [float(t0), float(t1)], rtol=tol, atol=0.0):
                        raise ValueError(
                            f"`times` must run between {t0} and {t1}; got {float(times[0])} "
                            f"to {float(times[-1])}."
                        )
                times = times.at[0].set(t0).at[-1].set(t1)
                steps = times.shape[0] - 1
            elif self.time_grid != "uniform" and not (
                clock is not None and self.time_grid == "log-snr"
            ):
                times = time_grid(sde, t0, t1, steps, self.time_grid)
            if clock is not None and times is not None:  # uniform in lambda unless given
                times = clock.clock_time(times).at[0].set(0.0).at[-1].set(1.0)
            if times is None:
                controller = diffrax.ConstantStepSize()
                dt0 = span / steps
            else:
                controller = diffrax.StepTo(ts=times)
                dt0 = None
            max_steps = steps  # exactly the fixed steps (a checkpointed adjoint stores no more)
            brownian_tol = None
        adjoint = self.adjoint
        if adjoint is None:
            adjoint = diffrax.ForwardMode() if default_adjoint is None else default_adjoint
        if clock is not None:
            t0, t1 = 0.0, 1.0
        return SolvePlan(
            solver=solver,
            controller=controller,
            t0=float(t0),
            t1=float(t1),
            dt0=None if dt0 is None else jnp.asarray(dt0, dtype),
            times=times,
            adaptive=adaptive,
            max_steps=int(max_steps),
            adjoint=adjoint,
            brownian_tol=brownian_tol,
            clock=clock,
        )


def as_config(solver, name: str = "solver", **shortcuts) -> SolverConfig:
    """`solver` as a [`SolverConfig`][numpyro_fsdiff.SolverConfig]; the keyword shortcuts
    (`steps`, `rtol`, ...) that are not None build it, and may not be combined with a config.

    **Raises:** `ValueError` naming the shortcut given together with a `SolverConfig`.
    """
    given = {k: v for k, v in shortcuts.items() if v is not None}
    if isinstance(solver, SolverConfig):
        if given:
            raise ValueError(
                f"`{sorted(given)[0]}` cannot be given together with `{name}`=SolverConfig(...);"
                " set it in the SolverConfig."
            )
        return solver
    return SolverConfig(solver, **given)


class _TimeReversed(diffrax.AbstractTerm):
    r"""A term in the time variable $s = -t$, for solves that run forwards in $s$.

    The vector field is $-v(-s)$, since $\mathrm{d}t = -\mathrm{d}s$, and the control over
    $[s_0, s_1]$ is that of the real interval $[-s_1, -s_0]$; the reverse-time Brownian
    increment is then $-\Delta W$ with the right law, and a space-time Lévy area $H$, which
    keeps its sign under time reversal (Diffrax PR 746), is returned negated so that the
    product leaves it unchanged.

    Used for the SRK solvers (SRA1, ShARK, SEA), which in Diffrax 0.7.2 take the drift step with
    the wrong sign when `t0 > t1` (Diffrax issue 598; they form $h f$ with $h = t_1 - t_0$
    themselves instead of asking the term for its control).
    """

    term: diffrax.AbstractTerm

    def vf(self, t, y, args):
        return jax.tree.map(jnp.negative, self.term.vf(-t, y, args))

    def contr(self, t0, t1, **kwargs):
        control = self.term.contr(-t1, -t0, **kwargs)
        if isinstance(control, diffrax.AbstractSpaceTimeLevyArea):
            control = eqx.tree_at(lambda c: c.H, control, -control.H)
        return control

    def prod(self, vf, control):
        return self.term.prod(vf, control)


def needs_time_reversal(solver: diffrax.AbstractSolver) -> bool:
    """Whether a backward solve with `solver` must be re-posed in $s = -t$ (the SRK family)."""
    solver = getattr(solver, "predictor", solver)
    return isinstance(solver, diffrax.AbstractSRK)


def backward_sde_solve_args(terms, solver: diffrax.AbstractSolver, t0, t1, dt0):
    r"""`(terms, t0, t1, dt0)` for a reverse-time SDE solve ($t_0 > t_1$) with `solver`.

    Unchanged for every solver but the SRK ones (SRA1, ShARK, SEA), for which Diffrax 0.7.2
    takes the drift step with the wrong sign when `t0 > t1` (Diffrax issue 598): those solve
    forwards in $s = -t$ with the terms wrapped in `_TimeReversed`. The one place this
    workaround lives ([`SolvePlan.diffeqsolve`][numpyro_fsdiff.SolvePlan.diffeqsolve] calls it).
    """
    if not needs_time_reversal(solver) or float(t0) < float(t1):
        return terms, t0, t1, dt0
    terms = jax.tree.map(
        _TimeReversed,
        terms,
        is_leaf=lambda x: isinstance(x, diffrax.AbstractTerm)
        and not isinstance(x, diffrax.MultiTerm),
    )
    return terms, -t0, -t1, None if dt0 is None else -dt0


class LogSNRClock(diffrax.AbstractTerm):
    r"""An ODE term re-posed in the log-SNR clock, for solves with `clock="log-snr"`.

    With $\lambda_t = \log(m_t/\sigma_t)$ and $\dot\lambda_t = -eta(t)/(2\sigma_t^2)$, the
    solve runs in $s \in [0, 1]$, $\lambda(s) = \lambda_{t_0} + s(\lambda_{t_1} -
    \lambda_{t_0})$, with the vector field

    $$rac{\mathrm{d}y}{\mathrm{d}s} = vig(t(\lambda(s)), yig)\,
    rac{\mathrm{d}t}{\mathrm{d}\lambda}\,(\lambda_{t_1} - \lambda_{t_0}), \qquad
    rac{\mathrm{d}t}{\mathrm{d}\lambda} = -rac{2\sigma_t^2}{eta(t)},$$

    so equal steps in $s$ are equal steps in $\lambda$, and the time change is a scalar: the
    divergence of the augmented density ODE scales with it. $t(\lambda)$ is
    [`VPSDE.time_at_log_snr`][numpyro_fsdiff.VPSDE.time_at_log_snr]; the ends $t_0$, $t_1$
    are static, $\lambda$ is computed from the (possibly traced) schedule at solve time.

    **Arguments:** `term` (an ODE term in $t$, or None until the solve fills it), `sde`, `t0`,
    `t1`.
    """

    term: diffrax.AbstractTerm | None
    sde: eqx.Module
    t0: float = eqx.field(static=True)
    t1: float = eqx.field(static=True)

    def clock_time(self, t):
        r"""$s = (\lambda_t - \lambda_{t_0}) / (\lambda_{t_1} - \lambda_{t_0})$ of times $t$."""
        lam0, lam1 = self.sde.log_snr(self.t0), self.sde.log_snr(self.t1)
        return (self.sde.log_snr(t) - lam0) / (lam1 - lam0)

    def time(self, s):
        r"""$t(\lambda(s))$ and $\mathrm{d}t/\mathrm{d}s$."""
        lam0, lam1 = self.sde.log_snr(self.t0), self.sde.log_snr(self.t1)
        t = self.sde.time_at_log_snr(lam0 + s * (lam1 - lam0))
        _, std = self.sde.marginal_coefficients(t)
        return t, -2.0 * std**2 / self.sde.beta(t) * (lam1 - lam0)

    def vf(self, s, y, args):
        t, rate = self.time(s)
        return jax.tree.map(lambda v: v * rate.astype(v.dtype), self.term.vf(t, y, args))

    def contr(self, t0, t1, **kwargs):
        return t1 - t0

    def prod(self, vf, control):
        return jax.tree.map(lambda v: v * control, vf)


class SolvePlan(eqx.Module):
    """A [`SolverConfig`][numpyro_fsdiff.SolverConfig] fixed for one solve (built by
    `SolverConfig.plan`): the solver instance, the step-size controller, the interval.

    **Fields:** `solver`, `controller` (`ConstantStepSize`, `StepTo` or `PIDController`),
    `t0`, `t1`, `dt0` (None for `StepTo`), `times` (the step times of a non-uniform grid, or
    None), `adaptive`, `max_steps`, `adjoint`, `brownian_tol`.
    """

    solver: diffrax.AbstractSolver
    controller: diffrax.AbstractStepSizeController
    t0: float = eqx.field(static=True)
    t1: float = eqx.field(static=True)
    dt0: Float[Array, ""] | None
    times: Float[Array, " num_times"] | None
    adaptive: bool = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    adjoint: diffrax.AbstractAdjoint
    brownian_tol: ScalarLike | None = eqx.field(static=True)
    clock: "LogSNRClock | None" = None

    def brownian_motion(
        self, key: PRNGKeyArray, shape: tuple[int, ...], levy_area: type | None = None
    ) -> diffrax.AbstractBrownianPath:
        """The Brownian path a solve of this plan needs, of `shape`, from `key`.

        Fixed steps: a [`SteppedBrownianPath`][numpyro_fsdiff.SteppedBrownianPath] keyed by
        step (the sample depends only on its key); adaptive: a `VirtualBrownianTree` with
        `brownian_tol`. `levy_area` defaults to what the solver reads.
        """
        from ._terms import SteppedBrownianPath

        if levy_area is None:
            levy_area = levy_area_for(self.solver)
        if not self.adaptive:
            return SteppedBrownianPath(
                tuple(shape), key, self.t0, self.dt0, levy_area=levy_area, times=self.times
            )
        lo, hi = min(self.t0, self.t1), max(self.t0, self.t1)
        return diffrax.VirtualBrownianTree(
            lo, hi, tol=self.brownian_tol, shape=tuple(shape), key=key, levy_area=levy_area
        )

    def diffeqsolve(self, terms, y0, *, saveat: diffrax.SaveAt | None = None, args=None):
        """`diffrax.diffeqsolve(terms, solver, t0, t1, ...)` with this plan's steps, re-posed
        in $s = -t$ for a backward SRK solve (Diffrax issue 598).

        **Returns:** the `diffrax.Solution` (by default saved at `t1` only).
        """
        t0, t1, dt0 = self.t0, self.t1, self.dt0
        controller = self.controller
        if self.clock is not None:
            terms = eqx.tree_at(lambda c: c.term, self.clock, terms, is_leaf=lambda x: x is None)
        if needs_time_reversal(self.solver) and t0 > t1:
            terms, t0, t1, dt0 = backward_sde_solve_args(terms, self.solver, t0, t1, dt0)
            if isinstance(controller, diffrax.StepTo):
                controller = diffrax.StepTo(ts=-controller.ts)
        with warnings.catch_warnings():
            # StepTo with an array of times warns about dt0 being None only on old versions.
            warnings.simplefilter("ignore", UserWarning)
            return diffrax.diffeqsolve(
                terms,
                self.solver,
                t0,
                t1,
                dt0=dt0,
                y0=y0,
                args=args,
                saveat=diffrax.SaveAt(t1=True) if saveat is None else saveat,
                stepsize_controller=controller,
                max_steps=self.max_steps,
                adjoint=self.adjoint,
            )


def solve(
    config: SolverConfig,
    terms,
    y0,
    t0: float,
    t1: float,
    *,
    sde,
    kind: str,
    saveat: diffrax.SaveAt | None = None,
    default_adjoint: diffrax.AbstractAdjoint | None = None,
):
    """Solve `terms` from `y0` at `t0` to `t1` as `config` says (one call of Diffrax).

    For SDE terms, build the Brownian path with
    `config.plan(sde, t0, t1, kind="sde").brownian_motion(key, shape)` so that it matches the
    steps. SRK solves backwards in time are re-posed in $s = -t$ (Diffrax issue 598).

    **Returns:** the `diffrax.Solution`.
    """
    plan = config.plan(sde, t0, t1, kind=kind, default_adjoint=default_adjoint)
    return plan.diffeqsolve(terms, y0, saveat=saveat)


# The exponential integrators register their names ("ddim", "dpm++2m", ...) on import.
from . import _exponential  # noqa: E402, F401
