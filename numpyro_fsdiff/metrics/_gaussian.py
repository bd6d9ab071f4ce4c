r"""Exact 2-Wasserstein distances between Gaussians diagonal in the Fourier basis."""

import jax.numpy as jnp

from .._custom_types import ArrayLike, Float, Scalar, Spectrum
from .._grid import Grid
from .._validation import check_field_shape


def empirical_spectrum(
    samples: Float[ArrayLike, "num n1 n2"], grid: Grid, *, center: bool = False
) -> Spectrum:
    r"""The per-mode variances of a sample set, as grid eigenvalues.

    With the unitary DFT $\hat u = \mathrm{FFT}_{\text{ortho}}(u)$, a field $u \sim N(0, C)$ on a
    grid of $N$ points has $\mathbb{E}|\hat u_k|^2 = N c_k / |D|$, so the estimate of $c_k$ is
    $\frac{|D|}{N} \frac{1}{M}\sum_{i} |\hat u^{(i)}_k|^2$ (the diagonal of the empirical
    covariance in the Fourier basis).

    **Arguments:**

    - `samples`: `M` fields, shape `(M, n1, n2)`.
    - `grid`: their grid.
    - `center`: subtract the sample mean first (and divide by `M - 1`); off by default, for
      zero-mean targets.

    **Returns:** an array of shape `grid.shape` in `numpy.fft.fft2` layout.
    """
    check_field_shape("samples", samples, grid.shape)
    if jnp.ndim(samples) != 3 or jnp.shape(samples)[0] < 2:
        raise ValueError(
            f"`samples` must have shape (num, n1, n2) with num >= 2; got {jnp.shape(samples)}."
        )
    num = samples.shape[0]
    if center:
        samples = samples - jnp.mean(samples, axis=0)
    power = jnp.abs(jnp.fft.fft2(samples, norm="ortho")) ** 2
    return grid.cell_area * jnp.sum(power, axis=0) / (num - 1 if center else num)


def gaussian_w2_spectra(first: Spectrum, second: Spectrum) -> Scalar:
    r"""$W_2$ between $N(0, A)$ and $N(0, B)$ on $L^2(D)$, both diagonal in the Fourier basis:

    $$W_2^2 = \operatorname{tr}\big(A + B - 2 (A^{1/2} B A^{1/2})^{1/2}\big)
    = \sum_k \big(\sqrt{a_k} - \sqrt{b_k}\big)^2.$$

    **Arguments:**

    - `first`, `second`: the eigenvalues $a_k, b_k \ge 0$, same shape.

    **Returns:** the distance $W_2$ (not squared), in the units of the fields.
    """
    first, second = jnp.asarray(first), jnp.asarray(second)
    if first.shape != second.shape:
        raise ValueError(
            f"`first` and `second` must have the same shape; got {first.shape} and {second.shape}."
        )
    return jnp.sqrt(jnp.sum((jnp.sqrt(first) - jnp.sqrt(second)) ** 2))


def gaussian_w2(samples: Float[ArrayLike, "num n1 n2"], spectrum: Spectrum, grid: Grid) -> Scalar:
    r"""$W_2$ between the Gaussian of the samples' empirical spectrum and $N(0, C)$.

    The samples are summarised by $N(0, \hat C)$ with $\hat C$ the diagonal of their empirical
    covariance in the Fourier basis
    ([`empirical_spectrum`][numpyro_fsdiff.metrics.empirical_spectrum]);
    then $W_2^2 = \sum_k (\sqrt{\hat c_k} - \sqrt{c_k})^2$ exactly
    ([`gaussian_w2_spectra`][numpyro_fsdiff.metrics.gaussian_w2_spectra]). With `M` exact samples
    it does not vanish: $\mathbb{E} W_2^2 \approx \sum_k c_k / (4M)$, or $c_k / (2M)$ for the
    few real modes ($k = -k$), since $\hat c_k / c_k$ has variance $1/M$ ($2/M$ for real modes).

    **Arguments:**

    - `samples`: shape `(M, n1, n2)`.
    - `spectrum`: the true grid eigenvalues $c_k$, shape `grid.shape`
      (e.g. `covariance.eigenvalues(grid)`).
    - `grid`: the grid.

    **Returns:** the distance.
    """
    check_field_shape("spectrum", spectrum, grid.shape)
    return gaussian_w2_spectra(empirical_spectrum(samples, grid), spectrum)
