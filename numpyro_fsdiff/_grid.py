"""Periodic rectangular grids of point values, and resampling between them."""

import functools
import numbers
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._custom_types import Array, ArrayLike, BatchedField, Float, Int
from ._validation import check_finite, check_positive


def _is_int(n) -> bool:
    """Whether `n` is an integer scalar (Python, numpy or a concrete integer array), not bool."""
    if isinstance(n, bool) or isinstance(n, jax.core.Tracer):
        return False
    if isinstance(n, numbers.Integral):
        return True
    arr = np.asarray(n) if isinstance(n, (np.ndarray, jax.Array)) else None
    return arr is not None and arr.ndim == 0 and np.issubdtype(arr.dtype, np.integer)


class Grid(eqx.Module):
    r"""A periodic grid of point values on the rectangle $D = [0, L_1) \times [0, L_2)$.

    The grid of shape `(n1, n2)` holds the values $u(x_j)$ at $x_j = (j_1 L_1/n_1, j_2 L_2/n_2)$.
    It sees the integer wavenumbers of `numpy.fft.fftfreq(n, 1/n)`: $k_i \in
    \{-\lfloor n_i/2 \rfloor, \dots, \lceil n_i/2 \rceil - 1\}$, and the physical frequencies
    $k_i / L_i$. Any `n1, n2 >= 2` works: odd, even and non-square.

    **Arguments:**

    - `shape`: the number of points `(n1, n2)` along each axis.
    - `lengths`: the side lengths `(L1, L2)` of the domain; the unit square by default.

    !!! example

        ```python
        grid = Grid((28, 28))
        x1, x2 = grid.coords()
        u = jnp.sin(2 * jnp.pi * x1)
        v = jnp.sin(2 * jnp.pi * x1) * jnp.cos(2 * jnp.pi * x2)
        grid.inner(u, u)  # the L2(D) inner product by quadrature: 1/2 on every grid
        grid.inner(u, v)  # 0: different Fourier modes
        ```
    """

    shape: tuple[int, int] = eqx.field(static=True)
    lengths: tuple[float, float] = eqx.field(static=True)

    def __init__(self, shape, lengths=(1.0, 1.0)):
        try:
            items = tuple(shape)
        except TypeError:
            raise ValueError(f"`shape` must be a pair of ints (n1, n2); got {shape!r}.") from None
        # Integers only (Python or numpy): 8.5 is refused, never truncated to 8.
        if not all(_is_int(n) for n in items):
            raise ValueError(f"`shape` must be a pair of ints (n1, n2); got {shape!r}.")
        shape = tuple(int(n) for n in items)
        if len(shape) != 2 or any(n < 2 for n in shape):
            raise ValueError(f"`shape` must be two ints, each >= 2; got {shape!r}.")
        try:
            lengths = tuple(float(length) for length in lengths)
        except TypeError:
            raise ValueError(f"`lengths` must be a pair of floats; got {lengths!r}.") from None
        if len(lengths) != 2:
            raise ValueError(f"`lengths` must be a pair (L1, L2); got {lengths!r}.")
        check_positive("lengths", lengths)
        self.shape = shape
        self.lengths = lengths

    @property
    def size(self) -> int:
        """The number of points $N = n_1 n_2$."""
        return self.shape[0] * self.shape[1]

    @property
    def area(self) -> float:
        """The area $|D| = L_1 L_2$."""
        return self.lengths[0] * self.lengths[1]

    @property
    def cell_area(self) -> float:
        """The quadrature weight $|D| / N$ of each point."""
        return self.area / self.size

    def with_shape(self, shape) -> "Grid":
        """The grid of another `shape` on the same domain."""
        return Grid(shape, self.lengths)

    def coords(self) -> Float[Array, "2 n1 n2"]:
        """The point coordinates, stacked as `(x1, x2)` each of shape `(n1, n2)`."""
        axes = [jnp.arange(n) * (length / n) for n, length in zip(self.shape, self.lengths)]
        return jnp.stack(jnp.meshgrid(*axes, indexing="ij"))

    def wavenumbers(self) -> Int[Array, "2 n1 n2"]:
        """The integer wavenumbers `(k1, k2)` in `numpy.fft.fft2` layout."""
        axes = [np.rint(np.fft.fftfreq(n, 1.0 / n)).astype(np.int32) for n in self.shape]
        return jnp.asarray(np.stack(np.meshgrid(*axes, indexing="ij")))

    def frequencies_squared(self) -> Float[Array, "n1 n2"]:
        r"""$|k/L|^2 = (k_1/L_1)^2 + (k_2/L_2)^2$ in `numpy.fft.fft2` layout."""
        k1, k2 = self.wavenumbers()
        return (k1 / self.lengths[0]) ** 2 + (k2 / self.lengths[1]) ** 2

    def nyquist_multiplicity(self) -> Float[Array, "n1 n2"]:
        r"""How many wavenumbers of the symmetric set $K_n$ fold onto each grid mode.

        On an even axis the frequencies $+n/2$ and $-n/2$ coincide at the grid points, so the
        grid mode $-n/2$ carries both: multiplicity 2 (4 at a corner of two even axes), else 1.
        """
        factors = []
        for n in self.shape:
            f = np.ones(n)
            if n % 2 == 0:
                f[n // 2] = 2.0
            factors.append(f)
        return jnp.asarray(np.outer(*factors))

    def inner(self, u: BatchedField, v: BatchedField) -> Float[Array, "*batch"]:
        r"""The $L^2(D)$ inner product by quadrature, $\frac{|D|}{N} \sum_j u_j v_j$."""
        return self.cell_area * jnp.sum(u * v, axis=(-2, -1))

    def norm_squared(self, u: BatchedField) -> Float[Array, "*batch"]:
        r"""$\|u\|^2_{L^2(D)}$ by the quadrature of [`Grid.inner`][numpyro_fsdiff.Grid.inner]."""
        return self.inner(u, u)


def _resample_axis(coeffs: Array, n_out: int, axis: int) -> Array:
    """Truncate or zero-pad unnormalised DFT coefficients along `axis` from n_in to n_out."""
    n_in = coeffs.shape[axis]
    if n_out == n_in:
        return coeffs
    c = jnp.moveaxis(coeffs, axis, -1)
    n_small = min(n_in, n_out)
    h = (n_small - 1) // 2  # the modes 1..h appear with both signs on both grids
    positive = c[..., : h + 1]
    negative = c[..., n_in - h :] if h > 0 else c[..., :0]
    if n_out > n_in:
        middle = jnp.zeros(c.shape[:-1] + (n_out - 2 * h - 1,), c.dtype)
        if n_in % 2 == 0:
            # Split the coarse Nyquist mode evenly between +n/2 and -n/2 so the refined
            # function is real and takes the same values at the coarse points.
            half = c[..., n_in // 2 : n_in // 2 + 1] / 2
            middle = middle.at[..., :1].set(half).at[..., -1:].set(half)
        out = jnp.concatenate([positive, middle, negative], axis=-1)
    else:
        pieces = [positive]
        if n_out % 2 == 0:
            # +n/2 and -n/2 of the fine grid coincide at the coarse points: add them.
            m = n_out // 2
            pieces.append(c[..., m : m + 1] + c[..., n_in - m : n_in - m + 1])
        pieces.append(negative)
        out = jnp.concatenate(pieces, axis=-1)
    return jnp.moveaxis(out * (n_out / n_in), -1, axis)


def _area_average(u: Array, shape: tuple[int, int]) -> Array:
    """Average over the coarse cell centred on each coarse point (integer factors only)."""
    out = u
    for axis, n_out in zip((-2, -1), shape):
        n_in = out.shape[axis]
        if n_in % n_out != 0 or n_out > n_in:
            raise ValueError(
                f"`resampling='area'` needs the output size to divide the input size; got "
                f"{n_in} -> {n_out} on axis {axis}."
            )
        f = n_in // n_out
        if f == 1:
            continue
        # Centred box of width f fine cells: f points for odd f; f + 1 points with half
        # weights at the ends for even f (the exact cell average of the linear interpolant).
        half = f // 2
        offsets = range(-half, half + 1)
        weights = [1.0] * len(offsets)
        if f % 2 == 0:
            weights[0] = weights[-1] = 0.5
        total = sum(w * jnp.roll(out, -o, axis=axis) for w, o in zip(weights, offsets))
        out = jnp.take(total / f, jnp.arange(0, n_in, f), axis=axis)
    return out


def resample(
    u: ArrayLike,
    shape,
    *,
    resampling: str = "spectral",
    method: str | None = None,
) -> Float[Array, "*batch m1 m2"]:
    r"""Bring point values from one periodic grid to another of `shape`.

    `resampling="spectral"` truncates (coarsening) or zero-pads (refining) the Fourier
    coefficients, scaled so that point values are preserved: a function band-limited to the
    smaller grid keeps its values exactly, and `resample(resample(u, fine), coarse) == u`.

    Nyquist handling: on an even axis the grid mode $n/2$ stands for $\pm n/2$ together.
    Refining splits it evenly between $+n/2$ and $-n/2$ (the real interpolant); coarsening to
    an even size adds the fine modes $+m/2$ and $-m/2$, which coincide at the coarse points.
    Frequencies beyond the coarse grid are dropped (no aliasing).

    `resampling="area"` (coarsening by integer factors only) replaces each coarse value by the
    average of the fine field over the coarse cell centred on it.

    **Arguments:**

    - `u`: the values, shape `(..., n1, n2)`; leading axes are batch axes.
    - `shape`: the target `(m1, m2)`, each >= 2.
    - `resampling`: `"spectral"` or `"area"`.
    - `method`: the old name of `resampling` (deprecated; a `DeprecationWarning`).

    **Returns:** an array of shape `(..., m1, m2)`.

    **Raises:** `ValueError` naming `resampling` for another value, or `u` for NaN, inf or
    fewer than two axes.
    """
    if method is not None:
        warnings.warn(
            "`resample(..., method=)` is deprecated; use `resampling=`.",
            DeprecationWarning,
            stacklevel=2,
        )
        resampling = method
    target = Grid(shape).shape
    if jnp.ndim(u) < 2:
        raise ValueError(f"`u` must have at least two axes (..., n1, n2); got {jnp.shape(u)}.")
    u = check_finite("u", jnp.asarray(u))
    if resampling == "area":
        return _area_average(u, target)
    if resampling != "spectral":
        raise ValueError(f"`resampling` must be 'spectral' or 'area'; got {resampling!r}.")
    if u.shape[-2:] == target:
        return u
    return _spectral_resample(u, target)


@functools.partial(jax.jit, static_argnums=1)
def _spectral_resample(u: Array, target: tuple[int, int]) -> Array:
    coeffs = jnp.fft.fft2(u)
    coeffs = _resample_axis(coeffs, target[0], -2)
    coeffs = _resample_axis(coeffs, target[1], -1)
    return jnp.fft.ifft2(coeffs).real.astype(u.dtype)


def fourier_multiply(u: BatchedField, multiplier: Float[Array, "n1 n2"]) -> BatchedField:
    r"""Apply the Fourier multiplier $\hat u_k \mapsto m_k \hat u_k$ over the last two axes.

    `multiplier` is laid out like `numpy.fft.fft2` output and must be even
    ($m_k = m_{-k}$), so the result is real; computed with `rfft2` in $O(N \log N)$.
    """
    n1, n2 = u.shape[-2:]
    half = multiplier[:, : n2 // 2 + 1]
    return jnp.fft.irfft2(half * jnp.fft.rfft2(u), s=(n1, n2)).astype(u.dtype)


def band_mask(shape, cutoff: int) -> Float[Array, "n1 n2"]:
    r"""The indicator of the box band $\{k : |k_1| \le K, |k_2| \le K\}$ on a grid of `shape`.

    Laid out like `numpy.fft.fft2` output (integer wavenumbers of
    [`Grid.wavenumbers`][numpyro_fsdiff.Grid.wavenumbers]); even in $k$, so
    [`fourier_multiply`][numpyro_fsdiff.fourier_multiply] with it keeps fields real. On an
    even axis with $n/2 \le K$ the Nyquist mode (which stands for $\pm n/2$) is inside.

    **Arguments:**

    - `shape`: the grid shape `(n1, n2)`.
    - `cutoff`: the largest kept wavenumber $K \ge 0$ per axis.

    **Returns:** a float array of zeros and ones, shape `(n1, n2)`.
    """
    if isinstance(cutoff, bool) or not isinstance(cutoff, numbers.Integral) or cutoff < 0:
        raise ValueError(f"`cutoff` must be an int >= 0; got {cutoff!r}.")
    axes = [np.abs(np.rint(np.fft.fftfreq(n, 1.0 / n))) <= cutoff for n in Grid(shape).shape]
    return jnp.asarray(np.outer(*axes).astype(np.float32))


def band_limit(u: BatchedField, cutoff: int) -> BatchedField:
    r"""The spectral projection $P_K u = \sum_{|k_1|, |k_2| \le K} \hat u_k e_k$.

    Computed with `jnp.fft` over the last two axes in $O(N \log N)$; a field band-limited to
    $K$ is returned unchanged, and $P_K$ commutes with spectral
    [`resample`][numpyro_fsdiff.resample] between grids that resolve $K$ ($n_i \ge 2K + 2$),
    so $P_K u$ is the same function on all of them.

    **Arguments:**

    - `u`: values of shape `(..., n1, n2)`.
    - `cutoff`: the largest kept wavenumber $K$ per axis (see
      [`band_mask`][numpyro_fsdiff.band_mask]).

    **Returns:** $P_K u$, the shape of `u`.
    """
    return fourier_multiply(u, band_mask(u.shape[-2:], cutoff).astype(u.dtype))


def band_grid_shape(cutoff: int) -> tuple[int, int]:
    r"""The smallest even grid `(2K + 2, 2K + 2)` that resolves the band $|k_i| \le K$.

    Its Nyquist mode $K + 1$ lies outside the band, so every band-limited field is
    represented exactly, with both signs of every kept wavenumber.
    """
    band_mask((2, 2), cutoff)  # validates `cutoff`
    return (2 * int(cutoff) + 2, 2 * int(cutoff) + 2)
