r"""Sampling from a score-based model: reverse SDE, probability-flow ODE, predictor-corrector.

Every method starts from $X_T \sim N(0, Q)$ (DESIGN section 6: $p_T \approx N(0, Q)$ since
$m_T \approx 0$) and integrates directly backwards in time, from $t_0 = T$ to $t_1 = t_\varepsilon$,
with Diffrax.
"""

from typing import Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from ._corrector import LangevinTerm, PredictorCorrector
from ._custom_types import Array, Field, Float, Int, PRNGKeyArray, ScalarLike
from ._grid import Grid
from ._sde import VPSDE, Score
from ._sharding import check_divisible, map_blocks, shard_leading_axis
from ._solvers import has_error_estimate, levy_area_for, resolve_solver
from ._terms import SteppedBrownianPath, brownian_motion
from ._validation import check_field_shape, check_positive

Method = Literal["sde", "ode", "pc"]

DEFAULT_STEPS = 500
"""Fixed steps used when neither `steps` nor tolerances are given (reverse SDE and PC)."""
DEFAULT_TOLERANCE = 1e-5
"""`rtol = atol` of the default adaptive probability-flow solve."""


class SampleInfo(eqx.Module):
    """What a sampling run cost, per sample (arrays of the batch shape; scalars for one field).

    **Fields:**

    - `num_score_evaluations`: calls of the score $S(x, t)$, including those of rejected
      steps, of the corrector and of the final denoising step.
    - `num_accepted_steps`, `num_rejected_steps`: the solver's steps.
    """

    num_score_evaluations: Int[Array, "*batch"]
    num_accepted_steps: Int[Array, "*batch"]
    num_rejected_steps: Int[Array, "*batch"]

    @property
    def num_steps(self) -> Int[Array, "*batch"]:
        """Accepted plus rejected steps."""
        return self.num_accepted_steps + self.num_rejected_steps


def score_evaluations_per_step(solver: diffrax.AbstractSolver) -> tuple[int, int]:
    """`(per_step, initial)`: score evaluations of each attempted step and of the start.

    Runge-Kutta solvers evaluate each stage once; first-same-as-last ones (Tsit5, Dopri5) reuse
    the last stage, so they cost one evaluation at the start and one less per step. The SRK
    family (SRA1, ShARK, SEA) evaluates the drift once per stage; Euler-Maruyama and EulerHeun
    evaluate it once (EulerHeun's second stage only re-evaluates the state-independent noise).

    **Raises:** `ValueError` for a solver whose cost is not known.
    """
    if isinstance(solver, PredictorCorrector):
        per_step, initial = score_evaluations_per_step(solver.predictor)
        return per_step + solver.corrector_steps, initial
    if isinstance(solver, (diffrax.Euler, diffrax.EulerHeun)):
        return 1, 0
    if isinstance(solver, diffrax.AbstractRungeKutta):
        stages = len(solver.tableau.c) + 1
        fsal = int(bool(solver.tableau.fsal))
        return stages - fsal, fsal
    if isinstance(solver, diffrax.AbstractSRK):
        return len(solver.tableau.c) + 1, 0
    raise ValueError(f"the score evaluations per step of `solver`={solver!r} are not known.")


def tweedie_denoise(score: Score, sde: VPSDE, x: Field, t: ScalarLike) -> Field:
    r"""The posterior mean $\mathbb{E}[X_0 \mid X_t = x] = (x + \sigma_t^2 S(x, t)) / m_t$
    (Tweedie's formula for the Q-preconditioned score, DESIGN section 4).

    **Arguments:**

    - `score`: the Q-preconditioned score on one field.
    - `sde`: the [`VPSDE`][numpyro_fsdiff.VPSDE] that defines $m_t$, $\sigma_t$.
    - `x`: one field.
    - `t`: the time of `x`.

    **Returns:** the denoised field, shaped like `x`.
    """
    mean, std = sde.marginal_coefficients(t)
    return (x + std**2 * score(x, t)) / mean


class _Plan(eqx.Module):
    """A checked sampling configuration (built once, outside jit)."""

    solver: diffrax.AbstractSolver
    controller: diffrax.AbstractStepSizeController
    dt0: Float[Array, ""]
    method: str = eqx.field(static=True)
    adaptive: bool = eqx.field(static=True)
    t_eps: float = eqx.field(static=True)
    denoise: bool = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    brownian_tol: float | None = eqx.field(static=True)
    adjoint: diffrax.AbstractAdjoint


def _check_steps(name: str, steps) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`{name}` must be an int >= 1; got {steps!r}.")


def _plan(
    sde: VPSDE,
    *,
    method,
    solver,
    steps,
    rtol,
    atol,
    t_eps,
    denoise,
    corrector_steps,
    snr,
    max_steps,
    adjoint,
    brownian_tol,
) -> _Plan:
    if not isinstance(sde, VPSDE):
        raise ValueError(f"`sde` must be a VPSDE; got {sde!r}.")
    if method not in ("sde", "ode", "pc"):
        raise ValueError(f"`method` must be 'sde', 'ode' or 'pc'; got {method!r}.")
    try:
        t_eps = float(t_eps)
    except TypeError:
        raise ValueError(f"`t_eps` must be a float in (0, T={sde.T}); got {t_eps!r}.") from None
    if not 0.0 < t_eps < sde.T:
        raise ValueError(f"`t_eps` must lie in (0, T={sde.T}); got {t_eps!r}.")
    if solver is None:
        solver = "tsit5" if method == "ode" else "euler"
    solver = resolve_solver(solver, kind="ode" if method == "ode" else "sde")
    if method == "pc":
        if not isinstance(solver, PredictorCorrector):
            solver = PredictorCorrector(solver, corrector_steps=corrector_steps, snr=snr)
        if _needs_time_reversal(solver):
            # The SRK predictors must be re-posed in s = -t (Diffrax issue 598), which hides
            # the corrector's Langevin term from PredictorCorrector.
            raise ValueError(
                "`solver`: method='pc' does not support the SRK predictors (SRA1, ShARK, SEA); "
                f"got {type(solver.predictor).__name__}. Use 'euler' or 'heun', or "
                "method='sde' for an SRK solver."
            )
    if steps is not None:
        _check_steps("steps", steps)
    for name, value in (("rtol", rtol), ("atol", atol)):
        if value is not None:
            check_positive(name, value)
    adaptive = rtol is not None or atol is not None
    if not adaptive and steps is None:
        if method == "ode" and has_error_estimate(solver):
            adaptive, rtol, atol = True, DEFAULT_TOLERANCE, DEFAULT_TOLERANCE
        else:
            steps = DEFAULT_STEPS
    span = sde.T - t_eps
    if adaptive:
        name = type(solver).__name__
        if method == "pc":
            raise ValueError(
                "`rtol`/`atol` (adaptive steps) are not available for `method='pc'`, whose "
                "corrector has no error estimate; pass `steps`."
            )
        if not has_error_estimate(solver):
            raise ValueError(
                f"`solver`={name} has no error estimate, so adaptive stepping (`rtol`/`atol`) "
                "is not possible; pass `steps` for fixed steps or choose e.g. 'heun', 'sra1', "
                "'shark' (SDE) or 'tsit5', 'dopri5' (ODE)."
            )
        rtol = atol if rtol is None else rtol
        atol = rtol if atol is None else atol
        # Arrays, not Python floats, so that a new tolerance does not recompile.
        as_array = lambda v: jnp.asarray(v, dtype=jnp.result_type(float))  # noqa: E731
        controller = diffrax.PIDController(rtol=as_array(rtol), atol=as_array(atol))
        dt0 = -span / (steps if steps is not None else 64)
    else:
        controller = diffrax.ConstantStepSize()
        dt0 = -span / steps
    if max_steps is None:
        # Only a bound on the loop (nothing is stored per step), so one value for every step
        # count avoids a recompilation per `steps`.
        max_steps = max(16384, (steps or 0) + 1)
    _check_steps("max_steps", max_steps)
    if brownian_tol is None:
        brownian_tol = span / 2**14
    if adjoint is None:
        # Sampling is not differentiated by default: forward mode runs a plain while loop.
        adjoint = diffrax.ForwardMode()
    score_evaluations_per_step(solver)  # fail early for solvers of unknown cost
    return _Plan(
        solver=solver,
        controller=controller,
        dt0=jnp.asarray(dt0, dtype=jnp.result_type(float)),
        method=method,
        adaptive=adaptive,
        t_eps=t_eps,
        denoise=bool(denoise),
        max_steps=int(max_steps),
        brownian_tol=float(brownian_tol) if adaptive and method != "ode" else None,
        adjoint=adjoint,
    )


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


def _needs_time_reversal(solver: diffrax.AbstractSolver) -> bool:
    if isinstance(solver, PredictorCorrector):
        solver = solver.predictor
    return isinstance(solver, diffrax.AbstractSRK)


def backward_sde_solve_args(terms, solver: diffrax.AbstractSolver, t0, t1, dt0):
    r"""`(terms, t0, t1, dt0)` for a reverse-time SDE solve ($t_0 > t_1$) with `solver`.

    Unchanged for every solver but the SRK ones (SRA1, ShARK, SEA), for which Diffrax 0.7.2
    takes the drift step with the wrong sign when `t0 > t1` (Diffrax issue 598): those solve
    forwards in $s = -t$ with the terms wrapped in `_TimeReversed`. The one place this
    workaround lives; the samplers of `sample` and the DPS sampler of `numpyro_fsdiff.inverse`
    both call it (`method="pc"` rejects SRK predictors, whose corrector term it would hide).
    """
    if not _needs_time_reversal(solver):
        return terms, t0, t1, dt0
    terms = jax.tree.map(
        _TimeReversed,
        terms,
        is_leaf=lambda x: isinstance(x, diffrax.AbstractTerm)
        and not isinstance(x, diffrax.MultiTerm),
    )
    return terms, -t0, -t1, -dt0


def _solve(score: Score, sde: VPSDE, grid: Grid, key, x_T, plan: _Plan):
    key_init, key_noise, key_corrector = jax.random.split(key, 3)
    if x_T is None:
        x_T = sde.covariance.sample(key_init, grid)
    t0, t1 = sde.T, plan.t_eps
    if plan.method == "ode":
        terms = sde.probability_flow_term(score)
    else:
        predictor = plan.solver.predictor if plan.method == "pc" else plan.solver
        brownian = brownian_motion(
            key_noise, grid, t0, t1, levy_area=levy_area_for(predictor), tol=plan.brownian_tol,
            dt=None if plan.adaptive else plan.dt0,
        )
        terms = sde.reverse_terms(score, brownian, grid)
        if plan.method == "pc":
            # Keyed by step index, like the predictor's path: the sample depends only on its key.
            corrector_noise = SteppedBrownianPath(
                (plan.solver.corrector_steps,) + grid.shape, key_corrector, t0, plan.dt0
            )
            terms = diffrax.MultiTerm(
                *terms.terms, LangevinTerm(score, sde, grid, corrector_noise)
            )
    dt0 = plan.dt0
    if plan.method != "ode":
        terms, t0, t1, dt0 = backward_sde_solve_args(terms, plan.solver, t0, t1, dt0)
    solution = diffrax.diffeqsolve(
        terms,
        plan.solver,
        t0,
        t1,
        dt0=dt0,
        y0=x_T,
        saveat=diffrax.SaveAt(t1=True),
        stepsize_controller=plan.controller,
        max_steps=plan.max_steps,
        adjoint=plan.adjoint,
    )
    x = solution.ys[-1]
    if plan.denoise:
        x = tweedie_denoise(score, sde, x, plan.t_eps)
    per_step, initial = score_evaluations_per_step(plan.solver)
    num_steps = solution.stats["num_steps"]
    info = SampleInfo(
        num_score_evaluations=initial + per_step * num_steps + int(plan.denoise),
        num_accepted_steps=solution.stats["num_accepted_steps"],
        num_rejected_steps=solution.stats["num_rejected_steps"],
    )
    return x, info


_solve_jit = eqx.filter_jit(_solve)


def sample_one(
    score: Score,
    sde: VPSDE,
    grid: Grid,
    key: PRNGKeyArray,
    *,
    method: str = "sde",
    solver=None,
    steps: int | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    t_eps: float = 1e-3,
    denoise: bool = True,
    x_T: Field | None = None,
    corrector_steps: int = 1,
    snr: float = 0.16,
    max_steps: int | None = None,
    adjoint: diffrax.AbstractAdjoint | None = None,
    brownian_tol: float | None = None,
) -> tuple[Float[Array, "n1 n2"], SampleInfo]:
    r"""Draw one field from the model; the building block of [`sample`][numpyro_fsdiff.sample].

    Traceable: it can be called inside `jit`, `vmap` or a NumPyro model (all configuration is
    checked in Python first). The arguments are those of [`sample`][numpyro_fsdiff.sample],
    plus:

    - `x_T`: the starting field at time $T$ instead of a draw from $N(0, Q)$ (e.g. a fixed
      latent for the deterministic probability-flow map).

    **Returns:** `(x, info)`: a field of shape `grid.shape` and its
    [`SampleInfo`][numpyro_fsdiff.SampleInfo] (scalars).
    """
    if not isinstance(grid, Grid):
        raise ValueError(f"`grid` must be a Grid; got {grid!r}.")
    if x_T is not None:
        if jnp.ndim(x_T) != 2:
            raise ValueError(
                f"`x_T` must be one field of shape {grid.shape}; got {jnp.shape(x_T)}."
            )
        check_field_shape("x_T", x_T, grid.shape)
    plan = _plan(
        sde,
        method=method,
        solver=solver,
        steps=steps,
        rtol=rtol,
        atol=atol,
        t_eps=t_eps,
        denoise=denoise,
        corrector_steps=corrector_steps,
        snr=snr,
        max_steps=max_steps,
        adjoint=adjoint,
        brownian_tol=brownian_tol,
    )
    return _solve_jit(score, sde, grid, key, x_T, plan)


@eqx.filter_jit
def _sample_batch(score, sde, grid, keys, plan, chunk_size, mesh=None):
    one = lambda k: _solve(score, sde, grid, k, None, plan)  # noqa: E731

    def block(keys):
        if chunk_size is None or chunk_size >= keys.shape[0]:
            return jax.vmap(one)(keys)
        return jax.lax.map(one, keys, batch_size=chunk_size)

    # On a mesh, each device solves its own block of keys, `chunk_size` at a time.
    return block(keys) if mesh is None else map_blocks(block, mesh)(keys)


def sample(
    score: Score,
    sde: VPSDE,
    grid: Grid,
    key: PRNGKeyArray,
    num: int,
    *,
    method: str = "sde",
    solver=None,
    steps: int | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    t_eps: float = 1e-3,
    denoise: bool = True,
    chunk_size: int | None = 256,
    corrector_steps: int = 1,
    snr: float = 0.16,
    max_steps: int | None = None,
    adjoint: diffrax.AbstractAdjoint | None = None,
    brownian_tol: float | None = None,
    mesh: Mesh | None = None,
) -> tuple[Float[Array, "num n1 n2"], SampleInfo]:
    r"""Draw `num` fields from a score-based model on `grid`.

    Starts from $X_T \sim N(0, Q)$ and integrates from $T$ down to $t_\varepsilon$ with Diffrax:

    - `method="sde"`: the reverse SDE
      $\mathrm{d}X = [-\tfrac12\beta X - \beta S(X, t)]\,\mathrm{d}t + \sqrt\beta\,\mathrm{d}W^Q$
      ([`VPSDE.reverse_terms`][numpyro_fsdiff.VPSDE.reverse_terms]);
    - `method="ode"`: the probability-flow ODE $\dot X = -\tfrac12\beta\,[X + S(X, t)]$
      ([`VPSDE.probability_flow_term`][numpyro_fsdiff.VPSDE.probability_flow_term]);
    - `method="pc"`: reverse-SDE predictor steps, each followed by `corrector_steps`
      Q-preconditioned Langevin steps ([`PredictorCorrector`][numpyro_fsdiff.PredictorCorrector]).

    Then, by default (`denoise=True`), one Tweedie denoising step
    $x_0 = (x + \sigma_{t_\varepsilon}^2 S(x, t_\varepsilon)) / m_{t_\varepsilon}$
    ([`tweedie_denoise`][numpyro_fsdiff.tweedie_denoise]) removes the noise left at
    $t_\varepsilon$.

    Steps: `steps` gives fixed steps; `rtol`/`atol` give adaptive steps with a PID controller
    (and a `VirtualBrownianTree` for SDEs; a missing one of the two takes the other's value),
    for solvers with an error estimate. With neither: the reverse SDE and PC take
    500 fixed steps, the ODE adaptive steps with `rtol = atol = 1e-5` (or 500 fixed steps for a
    solver without an error estimate). Defaults: Euler-Maruyama for `"sde"` and `"pc"`, Tsit5 for
    `"ode"`.

    The score is called on single fields (vmapped by the library), so the grid can be any size
    the score accepts. The batch is processed `chunk_size` samples at a time (`jax.lax.map`
    over vmapped chunks), so memory stays bounded for large `num`.

    **Arguments:**

    - `score`: the Q-preconditioned score, any callable `(x, t) -> S(x, t)` on one field of
      shape `grid.shape` and a scalar time (a network, or e.g.
      [`GaussianScore`][numpyro_fsdiff.GaussianScore]).
    - `sde`: the [`VPSDE`][numpyro_fsdiff.VPSDE].
    - `grid`: the [`Grid`][numpyro_fsdiff.Grid] to sample on.
    - `key`: a PRNG key.
    - `num`: the number of samples, >= 1.
    - `method`: `"sde"`, `"ode"` or `"pc"`.
    - `solver`: a lower-case name (SDE: `'euler'`, `'heun'`, `'euler_heun'`, `'sra1'`,
      `'shark'`, `'sea'`; ODE: `'euler'`, `'heun'`, `'midpoint'`, `'tsit5'`, `'dopri5'`) or a
      Diffrax solver instance; for `"pc"`, the predictor.
    - `steps`: the number of fixed steps, >= 1 (with `rtol`/`atol`: sets the first step).
    - `rtol`, `atol`: tolerances for adaptive steps.
    - `t_eps`: the final time, in $(0, T)$.
    - `denoise`: whether to apply the final Tweedie step (one more score evaluation).
    - `chunk_size`: samples per vmapped chunk (`None`: all at once).
    - `corrector_steps`, `snr`: the corrector of `method="pc"` (Langevin steps per predictor
      step, and the signal-to-noise ratio $r$ of the step-size rule).
    - `max_steps`: the step limit (default 16384, or `steps + 1` if more).
    - `adjoint`: the Diffrax adjoint; `ForwardMode()` by default, since sampling is not
      differentiated (pass `diffrax.RecursiveCheckpointAdjoint()` to differentiate an ODE solve).
    - `brownian_tol`: the `VirtualBrownianTree` tolerance of adaptive SDE solves
      (default $(T - t_\varepsilon)/2^{14}$).
    - `mesh`: a device mesh (e.g. [`data_mesh`][numpyro_fsdiff.data_mesh]()): the samples
      are split across the devices of its `"data"` axis (`num` must be a multiple of their
      number), each device solving its share `chunk_size` at a time; the output is a global
      array sharded the same way. Each sample depends only on its key, so these are the
      samples of `mesh=None`.

    **Returns:** `(samples, info)`: an array of shape `(num, n1, n2)` and a
    [`SampleInfo`][numpyro_fsdiff.SampleInfo] with per-sample costs of shape `(num,)`.

    **Raises:** `ValueError` for an unknown method or solver name, adaptive stepping with a
    solver without an error estimate (or with `"pc"`), `steps < 1`, `t_eps` outside $(0, T)$,
    `num < 1`.

    !!! example

        ```python
        from numpyro_fsdiff.covariance import Matern

        sde = VPSDE(Matern(2.0, 3.0))
        grid = Grid((16, 16))
        score = GaussianScore(Matern(1.5, 2.0, 2.0), sde, grid)  # exact; or a network
        x, info = sample(score, sde, grid, jax.random.key(0), 8, method="ode", solver="heun",
                         steps=10)  # x: (8, 16, 16); without method: 500 Euler-Maruyama steps
        info.num_score_evaluations  # per sample: 2 per Heun step + 1 for the Tweedie step
        ```

    ??? cite "References"

        Song et al., *Score-Based Generative Modeling through Stochastic Differential
        Equations*, ICLR 2021.
    """
    if not isinstance(grid, Grid):
        raise ValueError(f"`grid` must be a Grid; got {grid!r}.")
    _check_steps("num", num)
    if chunk_size is not None:
        _check_steps("chunk_size", chunk_size)
        if chunk_size >= num:
            chunk_size = None
    plan = _plan(
        sde,
        method=method,
        solver=solver,
        steps=steps,
        rtol=rtol,
        atol=atol,
        t_eps=t_eps,
        denoise=denoise,
        corrector_steps=corrector_steps,
        snr=snr,
        max_steps=max_steps,
        adjoint=adjoint,
        brownian_tol=brownian_tol,
    )
    keys = jax.random.split(key, num)
    if mesh is not None:
        check_divisible("num", num, mesh)
        keys = shard_leading_axis(keys, mesh)
    return _sample_batch(score, sde, grid, keys, plan, chunk_size, mesh)
