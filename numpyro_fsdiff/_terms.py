r"""The Diffrax term for additive noise coloured by a covariance operator $Q$ on a grid."""

from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

from ._covariance import AbstractCovariance
from ._custom_types import Array, BatchedField, Float, Scalar, ScalarLike
from ._grid import Grid


class ColouredNoiseTerm(diffrax.AbstractTerm):
    r"""The noise term $g(t)\, Q^{1/2} \mathrm{d}W_t$ of an SDE on a grid.

    $W$ is a standard Brownian motion on the pixels; its increment $\Delta W$ and, where the
    solver asks for them, its space-time (and space-time-time) Lévy areas $H$, $K$ are
    coloured by [`AbstractCovariance.colour`][numpyro_fsdiff.covariance.AbstractCovariance.colour],
    a linear map, so $Q^{1/2}\Delta W$ is a $Q$-Wiener increment and the coloured $H$ is its
    Lévy area. The noise is additive (it does not depend on the state), so Euler-Maruyama,
    Heun, SRA1, ShARK and SEA all apply, forwards and backwards in time.

    **Arguments:**

    - `diffusion`: $t \mapsto g(t)$, a scalar.
    - `covariance`: the operator $Q$.
    - `grid`: the grid of the state.
    - `brownian`: a Diffrax Brownian path of shape `grid.shape`.
    """

    diffusion: Callable[[ScalarLike], Scalar]
    covariance: AbstractCovariance
    grid: Grid = eqx.field(static=True)
    brownian: diffrax.AbstractBrownianPath

    def vf(self, t, y, args) -> Scalar:
        return self.diffusion(t)

    def contr(self, t0, t1, **kwargs):
        increment = self.brownian.evaluate(t0, t1, **kwargs)
        colour = lambda w: self.covariance.colour(w, self.grid)  # noqa: E731
        if isinstance(increment, diffrax.AbstractSpaceTimeTimeLevyArea):
            parts = lambda a: (a.W, a.H, a.K)  # noqa: E731
        elif isinstance(increment, diffrax.AbstractSpaceTimeLevyArea):
            parts = lambda a: (a.W, a.H)  # noqa: E731
        elif isinstance(increment, diffrax.AbstractBrownianIncrement):
            parts = lambda a: (a.W,)  # noqa: E731
        else:
            return colour(increment)
        return eqx.tree_at(parts, increment, tuple(colour(p) for p in parts(increment)))

    def prod(self, vf: Scalar, control) -> BatchedField:
        return vf * control


class SteppedBrownianPath(diffrax.AbstractBrownianPath):
    r"""Brownian motion for fixed steps: one independent draw per step, keyed by step index.

    `evaluate(s, t)` over the step $[s, t]$ (with $s = t_{\mathrm{start}} + n\,\Delta t$ up to
    rounding) returns $\Delta W \sim N(0, (t - s) I)$ and, if asked, the space-time Lévy area
    $H \sim N(0, (t - s) I / 12)$, independent of $\Delta W$, from the key folded with
    $n = \mathrm{round}((s - t_{\mathrm{start}})/\Delta t)$. Keying on the step index rather than
    on the bits of $s$ (as `diffrax.UnsafeBrownianPath` does) makes a sample depend only on its
    key: not on whether it was drawn alone, in a vmapped batch or sharded over devices, where
    the compiled step times may differ in the last bit. Valid for steps of exactly $\Delta t$;
    adaptive solves need [`brownian_motion`][numpyro_fsdiff.brownian_motion] with a `tol`.

    **Arguments:**

    - `shape`: the shape of $W$ (a grid's `shape`).
    - `key`: the PRNG key of the path.
    - `t_start`: the time the solve starts from.
    - `dt`: the signed step of the solve (ignored when `times` is given).
    - `levy_area`: `diffrax.BrownianIncrement` or `diffrax.SpaceTimeLevyArea`.
    - `times`: the step times of a non-uniform grid (e.g. a
      [`SolverConfig`][numpyro_fsdiff.SolverConfig] time grid run by `diffrax.StepTo`), in
      either order. The step $[s, t]$ is then keyed by the index $n$ of the grid interval that
      holds its midpoint, so any steps between consecutive grid times are exact.
    """

    shape: tuple[int, ...] = eqx.field(static=True)
    levy_area: type = eqx.field(static=True)
    key: jax.Array
    t_start: Scalar
    dt: Scalar
    times: Float[Array, " num_times"] | None

    def __init__(
        self, shape, key, t_start, dt, levy_area=diffrax.BrownianIncrement, times=None
    ):
        if levy_area not in (diffrax.BrownianIncrement, diffrax.SpaceTimeLevyArea):
            raise ValueError(
                "`levy_area` must be diffrax.BrownianIncrement or diffrax.SpaceTimeLevyArea; "
                f"got {levy_area!r}."
            )
        self.shape = tuple(shape)
        self.levy_area = levy_area
        self.key = key
        self.t_start = jnp.asarray(t_start, dtype=jnp.result_type(float))
        dtype = jnp.result_type(float)
        self.dt = jnp.asarray(jnp.nan if dt is None else dt, dtype=dtype)
        if times is None:
            if dt is None:
                raise ValueError("`dt` must be given when `times` is None; got None.")
            self.times = None
        else:
            if jnp.ndim(times) != 1 or jnp.shape(times)[0] < 2:
                raise ValueError(
                    f"`times` must be a 1-D array of >= 2 step times; got shape "
                    f"{jnp.shape(times)}."
                )
            self.times = jnp.sort(jnp.asarray(times, dtype=dtype))

    @property
    def t0(self):
        return -jnp.inf

    @property
    def t1(self):
        return jnp.inf

    def evaluate(self, t0, t1=None, left: bool = True, use_levy: bool = False):
        del left
        if t1 is None:
            raise ValueError("SteppedBrownianPath only gives increments over a step (t0, t1).")
        t0 = jax.lax.stop_gradient(jnp.asarray(t0, dtype=self.dt.dtype))
        t1 = jax.lax.stop_gradient(jnp.asarray(t1, dtype=self.dt.dtype))
        if self.times is None:
            lower = jnp.minimum(t0, t1)
            index = jnp.round((lower - self.t_start) / self.dt).astype(jnp.int32)
        else:
            index = jnp.searchsorted(self.times, 0.5 * (t0 + t1)).astype(jnp.int32)
        key_w, key_h = jax.random.split(jax.random.fold_in(self.key, index))
        dt = t1 - t0
        scale = jnp.sqrt(jnp.abs(dt))
        w = jnp.sign(dt) * scale * jax.random.normal(key_w, self.shape, dtype=self.dt.dtype)
        if not use_levy:
            return w
        if self.levy_area is diffrax.SpaceTimeLevyArea:
            h = scale / jnp.sqrt(12.0) * jax.random.normal(key_h, self.shape, dtype=self.dt.dtype)
            return diffrax.SpaceTimeLevyArea(dt=dt, W=w, H=h)
        return diffrax.BrownianIncrement(dt=dt, W=w)


def brownian_motion(
    key,
    grid: Grid,
    t0: ScalarLike,
    t1: ScalarLike,
    *,
    levy_area: type = diffrax.BrownianIncrement,
    tol: ScalarLike | None = None,
    dt: ScalarLike | None = None,
    times: Float[Array, " num_times"] | None = None,
) -> diffrax.AbstractBrownianPath:
    """A standard Brownian motion on the pixels of `grid`, for a solve from `t0` to `t1`.

    - With `dt` (fixed steps of exactly `dt`, signed like `t1 - t0`): a
      [`SteppedBrownianPath`][numpyro_fsdiff.SteppedBrownianPath], one draw per step and no
      tree search: the cheap choice when steps are never rejected.
    - With `times` (fixed steps on a non-uniform grid, `diffrax.StepTo`): the same, keyed by
      the grid interval of each step.
    - Otherwise a `diffrax.VirtualBrownianTree` on the interval between `t0` and `t1` (either
      order) with tolerance `tol` (default $|t_1 - t_0| / 2^{14}$), which adaptive step-size
      control needs so that a rejected step is retried on the same path.

    Both depend only on `key`, so a sample does not change when it is drawn in a batch.
    """
    if times is not None:
        return SteppedBrownianPath(grid.shape, key, t0, None, levy_area=levy_area, times=times)
    if dt is not None:
        return SteppedBrownianPath(grid.shape, key, t0, dt, levy_area=levy_area)
    lo, hi = jnp.minimum(t0, t1), jnp.maximum(t0, t1)
    if tol is None:
        tol = (hi - lo) / 2**14
    return diffrax.VirtualBrownianTree(lo, hi, tol=tol, shape=grid.shape, key=key,
                                       levy_area=levy_area)
