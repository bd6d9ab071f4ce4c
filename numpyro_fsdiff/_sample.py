r"""Sampling from a score-based model: reverse SDE, probability-flow ODE, predictor-corrector.

Every method starts from $X_T \sim N(0, Q)$ (DESIGN section 6: $p_T \approx N(0, Q)$ since
$m_T \approx 0$) and integrates directly backwards in time, from $t_0 = T$ to $t_1 = t_\varepsilon$,
with Diffrax.
"""

import warnings
from typing import Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from ._corrector import LangevinTerm, PredictorCorrector
from ._custom_types import Array, Field, Float, Int, PRNGKeyArray, ScalarLike
from ._exponential import DataPredictionTerm, is_exponential
from ._grid import Grid
from ._sde import VPSDE, Score
from ._sharding import check_divisible, map_blocks, shard_leading_axis
from ._solvers import (
    DEFAULT_STEPS,  # noqa: F401  (re-exported)
    DEFAULT_TOLERANCE,  # noqa: F401  (re-exported)
    SolvePlan,
    SolverConfig,
    as_config,
    backward_sde_solve_args,  # noqa: F401  (re-exported for the DPS sampler)
    check_t_eps,
    needs_time_reversal,
)
from ._validation import check_data

Method = Literal["sde", "ode", "pc"]



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
    if isinstance(solver, (diffrax.Euler, diffrax.EulerHeun)) or is_exponential(solver):
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

    solve: SolvePlan
    method: str = eqx.field(static=True)
    t_eps: float = eqx.field(static=True)
    denoise: bool = eqx.field(static=True)


def _plan(sde: VPSDE, config: SolverConfig, *, method, t_eps, denoise, corrector_steps,
          snr) -> _Plan:
    if not isinstance(sde, VPSDE):
        raise ValueError(f"`sde` must be a VPSDE; got {sde!r}.")
    if method not in ("sde", "ode", "pc"):
        raise ValueError(f"`method` must be 'sde', 'ode' or 'pc'; got {method!r}.")
    t_eps = check_t_eps(t_eps, sde.T)
    kind = "ode" if method == "ode" else "sde"
    if method == "pc":
        if config.adaptive:
            raise ValueError(
                "`rtol`/`atol` (adaptive steps) are not available for `method='pc'`, whose "
                "corrector has no error estimate; pass `steps`."
            )
        predictor = config.resolve_solver("sde")
        if not isinstance(predictor, PredictorCorrector):
            predictor = PredictorCorrector(predictor, corrector_steps=corrector_steps, snr=snr)
        if is_exponential(predictor.predictor):
            raise ValueError(
                "`solver`: method='pc' takes a Runge-Kutta or Euler predictor; got the "
                f"exponential integrator {type(predictor.predictor).__name__}."
            )
        if needs_time_reversal(predictor):
            # The SRK predictors must be re-posed in s = -t (Diffrax issue 598), which hides
            # the corrector's Langevin term from PredictorCorrector.
            raise ValueError(
                "`solver`: method='pc' does not support the SRK predictors (SRA1, ShARK, SEA); "
                f"got {type(predictor.predictor).__name__}. Use 'euler' or 'heun', or "
                "method='sde' for an SRK solver."
            )
        config = config.with_solver(predictor)
    plan = config.plan(sde, sde.T, t_eps, kind=kind, default_adjoint=diffrax.ForwardMode())
    score_evaluations_per_step(plan.solver)  # fail early for solvers of unknown cost
    return _Plan(solve=plan, method=method, t_eps=t_eps, denoise=bool(denoise))


def _solve(score: Score, sde: VPSDE, grid: Grid, key, x_T, plan: _Plan):
    key_init, key_noise, key_corrector = jax.random.split(key, 3)
    if x_T is None:
        x_T = sde.covariance.sample(key_init, grid)
    solve = plan.solve
    exponential = is_exponential(solve.solver)
    if plan.method == "ode":
        terms = DataPredictionTerm(score, sde) if exponential else sde.probability_flow_term(score)
    else:
        brownian = solve.brownian_motion(key_noise, grid.shape)
        if exponential:
            prediction = DataPredictionTerm(score, sde)
            terms = diffrax.MultiTerm(prediction, sde.noise_term(brownian, grid))
        else:
            terms = sde.reverse_terms(score, brownian, grid)
        if plan.method == "pc":
            # Keyed by step index, like the predictor's path: the sample depends only on its key.
            corrector_noise = solve.brownian_motion(
                key_corrector, (solve.solver.corrector_steps,) + grid.shape,
                levy_area=diffrax.BrownianIncrement,
            )
            terms = diffrax.MultiTerm(
                *terms.terms, LangevinTerm(score, sde, grid, corrector_noise)
            )
    solution = solve.diffeqsolve(terms, x_T)
    x = solution.ys[-1]
    if plan.denoise:
        x = tweedie_denoise(score, sde, x, plan.t_eps)
    per_step, initial = score_evaluations_per_step(solve.solver)
    num_steps = solution.stats["num_steps"]
    info = SampleInfo(
        num_score_evaluations=initial + per_step * num_steps + int(plan.denoise),
        num_accepted_steps=solution.stats["num_accepted_steps"],
        num_rejected_steps=solution.stats["num_rejected_steps"],
    )
    return x, info


_solve_jit = eqx.filter_jit(_solve)


def batched_score(score: Score):
    """`(xs, t) -> S(xs, t)` on a batch of fields at one time: the score's own
    `batched(xs, ts)` when it has one (networks: one call on the batch), else `jax.vmap`."""
    if hasattr(score, "batched"):
        return lambda xs, t: score.batched(xs, jnp.full(xs.shape[:1], t, dtype=xs.dtype))
    return jax.vmap(score, in_axes=(0, None))


class _BatchedPath(diffrax.AbstractBrownianPath):
    """Per-sample Brownian paths (a pytree with a leading batch axis) evaluated together:
    sample `i` sees exactly the increments of its own path."""

    paths: diffrax.AbstractBrownianPath

    @property
    def levy_area(self):
        return self.paths.levy_area

    @property
    def t0(self):
        return -jnp.inf

    @property
    def t1(self):
        return jnp.inf

    def evaluate(self, t0, t1=None, left: bool = True, use_levy: bool = False):
        out = jax.vmap(lambda p: p.evaluate(t0, t1, left, use_levy))(self.paths)
        if isinstance(out, diffrax.AbstractBrownianIncrement):
            out = eqx.tree_at(lambda a: a.dt, out, out.dt[0])
        return out


def _can_batch(plan: _Plan) -> bool:
    """Whether the batch can be solved as one state: fixed steps (the same for every sample),
    no corrector, no SRK (whose Lévy areas carry per-sample step sizes)."""
    solver = plan.solve.solver
    return (
        not plan.solve.adaptive
        and plan.method in ("sde", "ode")
        and not needs_time_reversal(solver)
    )


def _solve_batch(score: Score, sde: VPSDE, grid: Grid, keys, plan: _Plan):
    """All samples of `keys` as one state `(batch, n1, n2)`: the score runs once per stage on
    the batch. The same draws as `_solve` per key (same keys, same noise, same steps)."""
    split = jax.vmap(lambda k: jax.random.split(k, 3))(keys)
    key_init, key_noise = split[:, 0], split[:, 1]
    x_T = jax.vmap(lambda k: sde.covariance.sample(k, grid))(key_init)
    solve = plan.solve
    scores = batched_score(score)
    exponential = is_exponential(solve.solver)
    if plan.method == "ode":
        if exponential:
            terms = DataPredictionTerm(scores, sde)
        else:
            terms = sde.probability_flow_term(scores)
    else:
        paths = jax.vmap(lambda k: solve.brownian_motion(k, grid.shape))(key_noise)
        brownian = _BatchedPath(paths)
        if exponential:
            terms = diffrax.MultiTerm(
                DataPredictionTerm(scores, sde), sde.noise_term(brownian, grid)
            )
        else:
            terms = sde.reverse_terms(scores, brownian, grid)
    solution = solve.diffeqsolve(terms, x_T)
    x = solution.ys[-1]
    if plan.denoise:
        mean, std = sde.marginal_coefficients(plan.t_eps)
        x = (x + std**2 * scores(x, plan.t_eps)) / mean
    per_step, initial = score_evaluations_per_step(solve.solver)
    batch = keys.shape[:1]
    num_steps = jnp.broadcast_to(solution.stats["num_steps"], batch)
    info = SampleInfo(
        num_score_evaluations=initial + per_step * num_steps + int(plan.denoise),
        num_accepted_steps=jnp.broadcast_to(solution.stats["num_accepted_steps"], batch),
        num_rejected_steps=jnp.broadcast_to(solution.stats["num_rejected_steps"], batch),
    )
    return x, info


_UNSET = object()
_NEW_NAMES = {"num": "num_samples"}


def _count(name: str, value) -> int:
    if isinstance(value, np.integer):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1; got {value!r}.")
    return value


def _legacy_key(fn: str, args: tuple, key, names: tuple[str, ...]):
    """Split old positional arguments `(key, ...)` from `args`, warning once."""
    if len(args) > len(names):
        raise TypeError(f"{fn}() takes at most {len(names)} positional arguments after `grid`.")
    if args:
        warnings.warn(
            f"passing {', '.join(f'`{n}`' for n in names[: len(args)])} positionally to {fn}() "
            f"is deprecated; use "
            f"{', '.join(f'{_NEW_NAMES.get(n, n)}=' for n in names[: len(args)])} "
            "(keyword-only).",
            DeprecationWarning,
            stacklevel=3,
        )
    values = dict(zip(names, args))
    if "key" in values:
        if key is not None:
            raise ValueError("`key` given both positionally and as `key=`.")
        key = values["key"]
    if key is None:
        raise ValueError(f"`key` must be a PRNG key, passed as {fn}(..., key=key); got None.")
    return key, values


def sample_one(
    score: Score,
    sde: VPSDE,
    grid: Grid,
    *args,
    key: PRNGKeyArray | None = None,
    method: str = "sde",
    solver=None,
    steps: int | np.integer | None = None,
    rtol: ScalarLike | None = None,
    atol: ScalarLike | None = None,
    t_eps: ScalarLike = 1e-3,
    denoise: bool = True,
    x_T: Field | None = None,
    corrector_steps: int = 1,
    snr: float = 0.16,
    max_steps: int | np.integer | None = None,
    adjoint: diffrax.AbstractAdjoint | None = None,
    brownian_tol: ScalarLike | None = None,
) -> tuple[Float[Array, "n1 n2"], SampleInfo]:
    r"""Draw one field from the model; the building block of [`sample`][numpyro_fsdiff.sample].

    Traceable: it can be called inside `jit`, `vmap` or a NumPyro model (all configuration is
    checked in Python first). The arguments are those of [`sample`][numpyro_fsdiff.sample],
    plus:

    - `x_T`: the starting field at time $T$ instead of a draw from $N(0, Q)$ (e.g. a fixed
      latent for the deterministic probability-flow map).

    The key is keyword-only (`key=`); `sample_one(score, sde, grid, key)` still works for
    one release with a `DeprecationWarning`.

    **Returns:** `(x, info)`: a field of shape `grid.shape` and its
    [`SampleInfo`][numpyro_fsdiff.SampleInfo] (scalars).
    """
    key, _ = _legacy_key("sample_one", args, key, ("key",))
    if not isinstance(grid, Grid):
        raise ValueError(f"`grid` must be a Grid; got {grid!r}.")
    if x_T is not None:
        if jnp.ndim(x_T) != 2:
            raise ValueError(
                f"`x_T` must be one field of shape {grid.shape}; got {jnp.shape(x_T)}."
            )
        x_T = check_data("x_T", x_T, shape=grid.shape)
    config = as_config(solver, steps=steps, rtol=rtol, atol=atol, max_steps=max_steps,
                       adjoint=adjoint, brownian_tol=brownian_tol)
    plan = _plan(sde, config, method=method, t_eps=t_eps, denoise=denoise,
                 corrector_steps=corrector_steps, snr=snr)
    return _solve_jit(score, sde, grid, key, x_T, plan)


@eqx.filter_jit
def _sample_batch(score, sde, grid, keys, plan, batch_size, mesh=None, as_one_state=False):
    one = lambda k: _solve(score, sde, grid, k, None, plan)  # noqa: E731

    def block(keys):
        if as_one_state:
            if batch_size is None or batch_size >= keys.shape[0]:
                return _solve_batch(score, sde, grid, keys, plan)
            blocks = keys.reshape((-1, batch_size) + keys.shape[1:])
            out = jax.lax.map(lambda k: _solve_batch(score, sde, grid, k, plan), blocks)
            return jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), out)
        if batch_size is None or batch_size >= keys.shape[0]:
            return jax.vmap(one)(keys)
        return jax.lax.map(one, keys, batch_size=batch_size)

    # On a mesh, each device solves its own block of keys, `batch_size` at a time.
    return block(keys) if mesh is None else map_blocks(block, mesh)(keys)


def sample(
    score: Score,
    sde: VPSDE,
    grid: Grid,
    *args,
    key: PRNGKeyArray | None = None,
    num_samples: int | np.integer | None = None,
    method: str = "sde",
    solver=None,
    steps: int | np.integer | None = None,
    rtol: ScalarLike | None = None,
    atol: ScalarLike | None = None,
    t_eps: ScalarLike = 1e-3,
    denoise: bool = True,
    batch_size: int | None = 256,
    corrector_steps: int = 1,
    snr: float = 0.16,
    max_steps: int | np.integer | None = None,
    adjoint: diffrax.AbstractAdjoint | None = None,
    brownian_tol: ScalarLike | None = None,
    mesh: Mesh | None = None,
    as_one_state: bool | None = None,
    num: int | np.integer | None = None,
    chunk_size=_UNSET,
) -> tuple[Float[Array, "num_samples n1 n2"], SampleInfo]:
    r"""Draw `num_samples` fields from a score-based model on `grid`.

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

    The solve is described by `solver`: a [`SolverConfig`][numpyro_fsdiff.SolverConfig]
    (solver, steps or tolerances, time grid, adjoint, step limit), or a solver name or Diffrax
    solver with the shortcuts `steps`, `rtol`, `atol`, `max_steps`, `adjoint`, `brownian_tol`
    (which build one; they cannot be combined with a `SolverConfig`). The defaults are those
    of `SolverConfig`: Euler-Maruyama with 500 uniform steps for `"sde"` and `"pc"`; Tsit5
    with adaptive steps at `rtol = atol = 1e-5` for `"ode"`. Adaptive SDE solves use a
    `VirtualBrownianTree`.

    The score is called on single fields (vmapped by the library), so the grid can be any size
    the score accepts. The batch is processed `batch_size` samples at a time (`jax.lax.map`
    over vmapped batches), so memory stays bounded for large `num_samples`.

    **Arguments:**

    - `score`: the Q-preconditioned score, any callable `(x, t) -> S(x, t)` on one field of
      shape `grid.shape` and a scalar time (a network, or e.g.
      [`GaussianScore`][numpyro_fsdiff.GaussianScore]).
    - `sde`: the [`VPSDE`][numpyro_fsdiff.VPSDE].
    - `grid`: the [`Grid`][numpyro_fsdiff.Grid] to sample on.
    - `key`: a PRNG key (keyword-only).
    - `num_samples`: the number of samples, >= 1.
    - `method`: `"sde"`, `"ode"` or `"pc"`.
    - `solver`: a [`SolverConfig`][numpyro_fsdiff.SolverConfig], a lower-case name (SDE:
      `'euler'`, `'heun'`, `'euler_heun'`, `'sra1'`, `'shark'`, `'sea'`; ODE: `'euler'`,
      `'heun'`, `'midpoint'`, `'tsit5'`, `'dopri5'`) or a Diffrax solver instance; for
      `"pc"`, the predictor.
    - `steps`, `rtol`, `atol`, `max_steps`, `adjoint`, `brownian_tol`: shortcuts for the
      fields of `SolverConfig` (`adjoint` defaults to `ForwardMode()`, since sampling is not
      differentiated; pass `diffrax.RecursiveCheckpointAdjoint()` to differentiate an ODE
      solve).
    - `t_eps`: the final time, in $(0, T)$.
    - `denoise`: whether to apply the final Tweedie step (one more score evaluation).
    - `batch_size`: samples per vmapped batch (`None`: all at once).
    - `corrector_steps`, `snr`: the corrector of `method="pc"` (Langevin steps per predictor
      step, and the signal-to-noise ratio $r$ of the step-size rule).
    - `mesh`: a device mesh (e.g. [`data_mesh`][numpyro_fsdiff.data_mesh]()): the samples
      are split across the devices of its `"data"` axis (`num_samples` must be a multiple of
      their number), each device solving its share `batch_size` at a time; the output is a
      global array sharded the same way. Each sample depends only on its key, so these are
      the samples of `mesh=None`.

    - `as_one_state`: solve each batch of `batch_size` samples as one state of shape
      `(batch_size, n1, n2)`, so the score runs once per stage on the batch (through its
      `batched(xs, ts)` when it has one, as
      [`NoisePredictionScore`][numpyro_fsdiff.NoisePredictionScore] and the FNO do): the fast
      path. The draws are those of the per-sample path (same keys,
      noise and steps). `None` (default): whenever possible (fixed steps, `"sde"` or `"ode"`,
      a non-SRK solver, no mesh, `num_samples` a multiple of `batch_size`).

    Deprecated (one release, with a `DeprecationWarning`): the key and the number of samples
    passed positionally (`sample(score, sde, grid, key, num)`), `num=` and `chunk_size=`.

    **Returns:** `(samples, info)`: an array of shape `(num_samples, n1, n2)` and a
    [`SampleInfo`][numpyro_fsdiff.SampleInfo] with per-sample costs of shape
    `(num_samples,)`.

    **Raises:** `ValueError` naming the argument: an unknown method or solver name, adaptive
    stepping with a solver without an error estimate (or with `"pc"`), `steps < 1`, `t_eps`
    outside $(0, T)$, `num_samples < 1`.

    !!! example

        ```python
        from numpyro_fsdiff.covariance import Matern

        sde = VPSDE(Matern(2.0, 3.0))
        grid = Grid((16, 16))
        score = GaussianScore(Matern(1.5, 2.0, 2.0), sde, grid)  # exact; or a network
        x, info = sample(score, sde, grid, key=jax.random.key(0), num_samples=8,
                         method="ode", solver="heun", steps=10)
        # x: (8, 16, 16); without method: 500 Euler-Maruyama steps
        info.num_score_evaluations  # per sample: 2 per Heun step + 1 for the Tweedie step
        ```

    ??? cite "References"

        Song et al., *Score-Based Generative Modeling through Stochastic Differential
        Equations*, ICLR 2021.
    """
    key, legacy = _legacy_key("sample", args, key, ("key", "num"))
    if "num" in legacy:
        num = legacy["num"]
    elif num is not None:
        warnings.warn("`num=` is deprecated; use `num_samples=`.", DeprecationWarning,
                      stacklevel=2)
    if num is not None:
        if num_samples is not None:
            raise ValueError("`num_samples` given together with the deprecated `num`.")
        num_samples = num
    if chunk_size is not _UNSET:
        warnings.warn("`chunk_size=` is deprecated; use `batch_size=`.", DeprecationWarning,
                      stacklevel=2)
        batch_size = chunk_size
    if not isinstance(grid, Grid):
        raise ValueError(f"`grid` must be a Grid; got {grid!r}.")
    num_samples = _count("num_samples", num_samples)
    if batch_size is not None:
        batch_size = _count("batch_size", batch_size)
        if batch_size >= num_samples:
            batch_size = None
    config = as_config(solver, steps=steps, rtol=rtol, atol=atol, max_steps=max_steps,
                       adjoint=adjoint, brownian_tol=brownian_tol)
    plan = _plan(sde, config, method=method, t_eps=t_eps, denoise=denoise,
                 corrector_steps=corrector_steps, snr=snr)
    keys = jax.random.split(key, num_samples)
    if mesh is not None:
        check_divisible("num_samples", num_samples, mesh)
        keys = shard_leading_axis(keys, mesh)
    if as_one_state is None:
        as_one_state = mesh is None and _can_batch(plan)
    elif as_one_state and not _can_batch(plan):
        raise ValueError(
            "`as_one_state`=True needs fixed steps, method 'sde' or 'ode' and a non-SRK solver."
        )
    if as_one_state and batch_size is not None and num_samples % batch_size:
        as_one_state = False  # equal blocks only; the per-sample path handles the remainder
    return _sample_batch(score, sde, grid, keys, plan, batch_size, mesh, bool(as_one_state))

