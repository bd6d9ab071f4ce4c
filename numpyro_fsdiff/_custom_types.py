"""Array aliases shared across the package."""

from typing import TypeAlias

from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

Field: TypeAlias = Float[Array, "n1 n2"]
"""Point values of one real function on a grid."""

BatchedField: TypeAlias = Float[Array, "*batch n1 n2"]
"""Point values of any number of real functions on a grid (batch axes first)."""

Spectrum: TypeAlias = Float[Array, "n1 n2"]
"""A real Fourier multiplier laid out like `numpy.fft.fft2` output."""

Scalar: TypeAlias = Float[Array, ""]
ScalarLike: TypeAlias = float | Float[ArrayLike, ""]

__all__ = [
    "Array",
    "ArrayLike",
    "BatchedField",
    "Field",
    "Float",
    "Int",
    "PRNGKeyArray",
    "Scalar",
    "ScalarLike",
    "Spectrum",
]
