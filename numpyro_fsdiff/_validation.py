"""Argument checks that name the argument and what it received.

Concrete values are checked at trace time with a `ValueError`; traced values (inside `jit`,
`grad`, `vmap`) are checked at run time with `equinox.error_if`, which also names the argument.
"""

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """Whether `x` holds values now (not a tracer inside a JAX transformation)."""
    return not isinstance(x, jax.core.Tracer)


def check_positive(name: str, value) -> None:
    """Raise if a concrete `value` is not a finite number > 0."""
    if is_concrete(value):
        arr = np.asarray(value)
        if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise ValueError(f"`{name}` must be a finite number > 0; got {value!r}.")


def check_field_shape(name: str, x, shape: Sequence[int]) -> None:
    """Raise if the last two axes of `x` are not `shape`."""
    x_shape = tuple(jnp.shape(x))
    if len(x_shape) < 2 or x_shape[-2:] != tuple(shape):
        raise ValueError(
            f"`{name}` must have shape (..., {shape[0]}, {shape[1]}) to match the grid; "
            f"got shape {x_shape}."
        )


def check_finite(name: str, x):
    """Return `x`, raising if it holds NaN or inf.

    Concrete arrays raise `ValueError` now; traced arrays raise at run time through
    `equinox.error_if`.
    """
    if is_concrete(x):
        if not np.all(np.isfinite(np.asarray(x))):
            raise ValueError(f"`{name}` contains NaN or inf values.")
        return x
    return eqx.error_if(x, ~jnp.all(jnp.isfinite(x)), f"`{name}` contains NaN or inf values.")


def check_data(name: str, x, *, shape: Sequence[int] | None = None, ndim: int | None = None):
    """Return user data `x` as a JAX array after the checks every public entry makes.

    The one validation helper for data arrays: `x` must be real-valued (bool, integer or
    float; not complex, not object or string), have exactly `ndim` axes if given, end in the
    field shape `shape` if given, and hold no NaN or inf (concrete arrays raise now, traced ones
    at run time through `equinox.error_if`).

    **Raises:** `ValueError` naming `name` and what it received.
    """
    try:
        if is_concrete(x) and not isinstance(x, jax.Array):
            x = np.asarray(x)
        dtype = np.dtype(jnp.result_type(x))
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` must be a real numeric array; got {type(x).__name__}."
        ) from None
    if not (
        np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer) or dtype == np.bool_
    ):
        raise ValueError(f"`{name}` must be a real numeric array; got dtype {dtype}.")
    if ndim is not None and jnp.ndim(x) != ndim:
        raise ValueError(f"`{name}` must have {ndim} axes; got shape {tuple(jnp.shape(x))}.")
    if shape is not None:
        check_field_shape(name, x, shape)
    return check_finite(name, jnp.asarray(x))
