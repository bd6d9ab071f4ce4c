r"""The affine map between pixel intensities in [0, 1] and the model space of training."""

import equinox as eqx
import jax.numpy as jnp

from .._custom_types import Array, Float, Scalar
from .._validation import check_positive


class PixelScaling(eqx.Module):
    r"""The affine map $x = (u - c)/s$ from pixel intensities $u \in [0, 1]$ to model space.

    The default $c = s = \tfrac12$ gives $x = 2u - 1 \in [-1, 1]$: background pixels at
    $-1$, ink at $+1$. Models are trained on $x$;
    [`to_pixels`][numpyro_fsdiff.data.PixelScaling.to_pixels] maps samples back and clips to
    $[0, 1]$.

    **Arguments:**

    - `shift`: $c$, the pixel value sent to 0.
    - `scale`: $s > 0$, the pixel range sent to a unit of model space.
    """

    shift: Scalar
    scale: Scalar

    def __init__(self, shift=0.5, scale=0.5):
        check_positive("scale", scale)
        self.shift = jnp.asarray(shift, dtype=jnp.result_type(float))
        self.scale = jnp.asarray(scale, dtype=jnp.result_type(float))

    def from_pixels(self, u: Float[Array, "..."]) -> Float[Array, "..."]:
        r"""Model-space values $x = (u - c) / s$ of pixel intensities $u$."""
        return (jnp.asarray(u) - self.shift) / self.scale

    def to_pixels(self, x: Float[Array, "..."], clip: bool = True) -> Float[Array, "..."]:
        r"""Pixel intensities $u = c + s x$, clipped to $[0, 1]$ unless `clip=False`."""
        u = self.shift + self.scale * jnp.asarray(x)
        return jnp.clip(u, 0.0, 1.0) if clip else u
