r"""Radially averaged power spectra of sample sets and their relative error."""

import jax.numpy as jnp
import numpy as np

from .._custom_types import ArrayLike, Float, Scalar
from .._grid import Grid
from .._validation import check_field_shape


def radial_power_spectrum(
    x: Float[ArrayLike, "num n1 n2"], grid: Grid
) -> tuple[Float[ArrayLike, " shells"], Float[ArrayLike, " shells"]]:
    r"""The radially averaged power spectrum of a sample set.

    The per-mode power $P_k = \frac{|D|}{N} \frac1M \sum_i |\hat x^{(i)}_k|^2$ (unitary DFT; the
    grid eigenvalue of the samples' second moment, so a field drawn from $N(0, C)$ has
    $\mathbb{E} P_k = c_k$ on every grid) averaged over the shells
    $\{k : \operatorname{round}(|k / L|\, \max_i L_i) = r\}$, $r = 0, 1, \dots$, of frequency
    $r / \max_i L_i$ (integer shells on the unit square).

    **Arguments:**

    - `x`: samples of shape `(num, n1, n2)`.
    - `grid`: their grid.

    **Returns:** `(frequencies, power)`, each of shape `(shells,)`.
    """
    check_field_shape("x", x, grid.shape)
    x = jnp.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"`x` must have shape (num, n1, n2); got {x.shape}.")
    power = grid.cell_area * jnp.mean(jnp.abs(jnp.fft.fft2(x, norm="ortho")) ** 2, axis=0)
    scale = max(grid.lengths)
    shell = np.rint(np.sqrt(np.asarray(grid.frequencies_squared())) * scale).astype(np.int32)
    counts = np.bincount(shell.ravel())
    sums = jnp.zeros(counts.shape, power.dtype).at[shell.ravel()].add(power.ravel())
    keep = counts > 0
    return jnp.asarray(np.arange(len(counts))[keep] / scale), sums[keep] / counts[keep]


def spectrum_relative_error(
    x: Float[ArrayLike, "n n1 n2"], reference: Float[ArrayLike, "m n1 n2"], grid: Grid
) -> Scalar:
    r"""Mean relative error of the radially averaged power spectrum of `x` against that of
    `reference` (e.g. the test set): $\frac1R \sum_r |P_r(x) - P_r(\text{ref})| / P_r(\text{ref})$
    over the shells $r$ where the reference has power.

    **Arguments:**

    - `x`, `reference`: sample sets on the same `grid` (resample first if needed).
    - `grid`: their grid.

    **Returns:** the error (0 for equal spectra).
    """
    _, p = radial_power_spectrum(x, grid)
    _, q = radial_power_spectrum(reference, grid)
    positive = q > 0
    return jnp.sum(jnp.where(positive, jnp.abs(p - q) / jnp.where(positive, q, 1.0), 0.0)) / (
        jnp.sum(positive)
    )
