r"""The Diffrax term for additive noise coloured by a covariance operator $Q$ on a grid."""

from collections.abc import Callable

import diffrax
import equinox as eqx
import jax.numpy as jnp

from ._covariance import AbstractCovariance
from ._custom_types import Field, Scalar, ScalarLike
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

    def prod(self, vf: Scalar, control) -> Field:
        return vf * control


def brownian_motion(
    key,
    grid: Grid,
    t0: ScalarLike,
    t1: ScalarLike,
    *,
    levy_area: type = diffrax.BrownianIncrement,
    tol: ScalarLike | None = None,
) -> diffrax.AbstractBrownianPath:
    """A standard Brownian motion on the pixels of `grid`.

    With `tol=None` (fixed steps), a `diffrax.UnsafeBrownianPath`: one fresh draw per step and
    no tree search, the cheap choice when steps are never rejected. With a `tol`, a
    `diffrax.VirtualBrownianTree` on the interval between `t0` and `t1` (either order), which
    adaptive step-size control needs so that a rejected step is retried on the same path.
    Solves on an `UnsafeBrownianPath` take `adjoint=diffrax.ForwardMode()` (or
    `DirectAdjoint`), since it cannot be checkpointed for reverse-mode differentiation.
    """
    if tol is None:
        return diffrax.UnsafeBrownianPath(shape=grid.shape, key=key, levy_area=levy_area)
    lo, hi = jnp.minimum(t0, t1), jnp.maximum(t0, t1)
    return diffrax.VirtualBrownianTree(lo, hi, tol=tol, shape=grid.shape, key=key,
                                       levy_area=levy_area)
