r"""Covariance operators $Q$ diagonal in the Fourier basis, $Q e_k = \lambda_k e_k$."""

import abc
import dataclasses
import numbers

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._custom_types import Array, BatchedField, Float, PRNGKeyArray, Scalar, Spectrum
from ._grid import Grid, band_mask, fourier_multiply
from ._validation import check_positive

_DIMENSION = 2  # a power-law spectrum (1 + |k|^2)^-alpha is summable in d dims iff alpha > d/2


def _as_float_array(value) -> Array:
    return jnp.asarray(value, dtype=jnp.result_type(float))


class AbstractCovariance(eqx.Module):
    r"""A covariance operator $Q$ on $L^2(D)$ with $Q e_k = \lambda_k e_k$.

    On a grid, $Q$ stands for the covariance of the point values of the field truncated to
    the symmetric set $K_n = \{|k_1| \le n_1/2, |k_2| \le n_2/2\}$. The grid eigenvalue of a
    mode is therefore the sum of $\lambda_k$ over the wavenumbers of $K_n$ that coincide at
    the grid points (the two Nyquist frequencies of an even axis fold onto one mode); see
    [`Grid.nyquist_multiplicity`][numpyro_fsdiff.Grid.nyquist_multiplicity]. With this, the
    law on a coarse grid is exactly the spectral coarsening of the law on a fine one.

    The pixel covariance of $N(0, Q)$ on a grid of $N$ points has the eigenvalues
    $N \lambda_k / |D|$ in the unitary DFT basis, so the pixel variance is
    $\sum_{k \in K_n} \lambda_k / |D|$, which tends to $\operatorname{tr}(Q) / |D|$ when
    $Q$ is trace-class.

    Subclasses implement [`eigenvalues`][numpyro_fsdiff.covariance.AbstractCovariance.eigenvalues]
    and `is_trace_class`; everything else is derived from them in $O(N \log N)$.
    """

    @abc.abstractmethod
    def eigenvalues(self, grid: Grid) -> Spectrum:
        r"""The grid eigenvalues $\lambda_k$ in `numpy.fft.fft2` layout, shape `grid.shape`."""

    @property
    @abc.abstractmethod
    def is_trace_class(self) -> bool:
        r"""Whether $\sum_k \lambda_k < \infty$ on $L^2$ of a 2-D domain."""

    def describe(self) -> str:
        """The operator with its parameter values, e.g. `Matern(alpha=1.0, tau=3.0, scale=1.0)`.

        Unlike the Module's repr (`alpha=f32[]`), concrete arrays are printed by value.
        """
        parts = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, AbstractCovariance):
                text = value.describe()
            elif isinstance(value, jax.core.Tracer):
                text = "<traced>"
            else:
                arr = np.asarray(value)
                text = repr(arr.item()) if arr.ndim == 0 else repr(arr.tolist())
            parts.append(f"{field.name}={text}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def require_trace_class(self, name: str = "covariance") -> None:
        """Raise a `ValueError` naming `name` unless the operator is trace-class."""
        if not self.is_trace_class:
            raise ValueError(
                f"`{name}` must be a trace-class covariance in 2-D; got {self.describe()}, "
                "which is not "
                "(power-law spectra need alpha > 1; WhiteNoise never is)."
            )

    def pixel_eigenvalues(self, grid: Grid) -> Spectrum:
        r"""Eigenvalues $N \lambda_k / |D|$ of the pixel covariance in the unitary DFT basis."""
        return self.eigenvalues(grid) / grid.cell_area

    def trace(self, grid: Grid) -> Scalar:
        r"""$\sum_{k \in K_n} \lambda_k$, the trace of $Q$ truncated to the grid."""
        return jnp.sum(self.eigenvalues(grid))

    @eqx.filter_jit
    def apply(self, u: BatchedField, grid: Grid) -> BatchedField:
        r"""$Q u$ on the grid."""
        return fourier_multiply(u, self.eigenvalues(grid))

    @eqx.filter_jit
    def sqrt_apply(self, u: BatchedField, grid: Grid) -> BatchedField:
        r"""$Q^{1/2} u$ on the grid."""
        return fourier_multiply(u, jnp.sqrt(self.eigenvalues(grid)))

    @eqx.filter_jit
    def inv_sqrt_apply(self, u: BatchedField, grid: Grid) -> BatchedField:
        r"""$Q^{-1/2} u$ on the grid."""
        return fourier_multiply(u, jax.lax.rsqrt(self.eigenvalues(grid)))

    @eqx.filter_jit
    def inv_apply(self, u: BatchedField, grid: Grid) -> BatchedField:
        r"""$Q^{-1} u$ on the grid."""
        return fourier_multiply(u, 1.0 / self.eigenvalues(grid))

    @eqx.filter_jit
    def colour(self, white: BatchedField, grid: Grid) -> BatchedField:
        r"""Map pixel white noise $w \sim N(0, I_N)$ to $N(0, Q)$ on the grid.

        $u = \mathrm{IFFT}(\sqrt{N \lambda_k / |D|}\, \mathrm{FFT}(w))$: the unitary transforms'
        normalisations cancel. Linear, so it also colours Brownian increments and Lévy areas.
        """
        return fourier_multiply(white, jnp.sqrt(self.pixel_eigenvalues(grid)))

    def log_det(self, grid: Grid) -> Scalar:
        r"""$\log\det$ of the pixel covariance, $\sum_k \log(N \lambda_k / |D|)$."""
        return jnp.sum(jnp.log(self.pixel_eigenvalues(grid)))

    def sample(
        self, key: PRNGKeyArray, grid: Grid, sample_shape: tuple[int, ...] = ()
    ) -> Float[Array, "*sample n1 n2"]:
        r"""Draw point values of $u \sim N(0, Q)$ on `grid` (Karhunen-Loève, truncated to $K_n$)."""
        white = jax.random.normal(key, tuple(sample_shape) + grid.shape)  # static shape
        return self.colour(white, grid)


def _fold(grid: Grid, spectrum: Spectrum) -> Spectrum:
    return spectrum * grid.nyquist_multiplicity()


class WhiteNoise(AbstractCovariance):
    r"""$Q = s^2 I$: the usual finite-dimensional diffusion model's noise. Not trace-class.

    On a grid it gives independent pixels of variance $s^2 N / |D|$, which grows without bound
    as the grid refines: the ill-posedness that trace-class operators remove. Kept as a
    baseline; no Nyquist folding, so that its pixels stay independent on every grid.

    **Arguments:**

    - `scale`: $s > 0$.
    """

    scale: Scalar

    def __init__(self, scale=1.0):
        check_positive("scale", scale)
        self.scale = _as_float_array(scale)

    def eigenvalues(self, grid: Grid) -> Spectrum:
        return jnp.full(grid.shape, self.scale**2)

    @property
    def is_trace_class(self) -> bool:
        return False


class Matern(AbstractCovariance):
    r"""Matérn-type operator $\lambda_k = s^2 (\tau^2 + 4\pi^2 |k/L|^2)^{-\alpha}$.

    Up to scaling, $Q = s^2 (\tau^2 - \Delta)^{-\alpha}$ with continuum (not stencil)
    eigenvalues, so it is the same operator on every grid. Trace-class in 2-D iff $\alpha > 1$.
    (The "bessel" prior of the multilevel paper's reference code.)

    **Arguments:**

    - `alpha`: the smoothness exponent $\alpha > 0$.
    - `tau`: the inverse length scale $\tau > 0$.
    - `scale`: the amplitude $s > 0$.
    """

    alpha: Scalar
    tau: Scalar
    scale: Scalar

    def __init__(self, alpha=2.0, tau=3.0, scale=1.0):
        check_positive("alpha", alpha)
        check_positive("tau", tau)
        check_positive("scale", scale)
        self.alpha = _as_float_array(alpha)
        self.tau = _as_float_array(tau)
        self.scale = _as_float_array(scale)

    def eigenvalues(self, grid: Grid) -> Spectrum:
        freq2 = 4 * jnp.pi**2 * grid.frequencies_squared()
        return _fold(grid, self.scale**2 * (self.tau**2 + freq2) ** (-self.alpha))

    @property
    def is_trace_class(self) -> bool:
        return bool(self.alpha > _DIMENSION / 2)


class LaplacianPower(AbstractCovariance):
    r"""Power of the Laplacian, $\lambda_k = s^2 (4\pi^2 |k/L|^2)^{-\alpha}$ for $k \ne 0$.

    The constant mode gets the finite eigenvalue `constant_mode` (by default the largest
    non-constant eigenvalue, $s^2 (4\pi^2 / \max(L_1, L_2)^2)^{-\alpha}$), so samples can
    change their spatial mean; it is never silently zero. Trace-class in 2-D iff $\alpha > 1$.

    **Arguments:**

    - `alpha`: the exponent $\alpha > 0$.
    - `scale`: the amplitude $s > 0$.
    - `constant_mode`: $\lambda_0 > 0$, or `None` for the default above.
    """

    alpha: Scalar
    scale: Scalar
    constant_mode: Scalar | None

    def __init__(self, alpha=2.0, scale=1.0, constant_mode=None):
        check_positive("alpha", alpha)
        check_positive("scale", scale)
        if constant_mode is not None:
            check_positive("constant_mode", constant_mode)
            constant_mode = _as_float_array(constant_mode)
        self.alpha = _as_float_array(alpha)
        self.scale = _as_float_array(scale)
        self.constant_mode = constant_mode

    def eigenvalues(self, grid: Grid) -> Spectrum:
        freq2 = 4 * jnp.pi**2 * grid.frequencies_squared()
        is_constant = freq2 == 0
        safe = jnp.where(is_constant, 1.0, freq2)
        spectrum = self.scale**2 * safe ** (-self.alpha)
        if self.constant_mode is None:
            lowest = 4 * jnp.pi**2 / max(grid.lengths) ** 2
            lambda0 = self.scale**2 * lowest ** (-self.alpha)
        else:
            lambda0 = self.constant_mode
        return _fold(grid, jnp.where(is_constant, lambda0, spectrum))

    @property
    def is_trace_class(self) -> bool:
        return bool(self.alpha > _DIMENSION / 2)


class Combined(AbstractCovariance):
    r"""The sum of two operators, $\lambda_k = \lambda^{(1)}_k + \lambda^{(2)}_k$.

    Trace-class iff both parts are.
    """

    first: AbstractCovariance
    second: AbstractCovariance

    def __init__(self, first, second):
        for name, part in (("first", first), ("second", second)):
            if not isinstance(part, AbstractCovariance):
                raise ValueError(f"`{name}` must be a covariance operator; got {part!r}.")
        self.first = first
        self.second = second

    def eigenvalues(self, grid: Grid) -> Spectrum:
        return self.first.eigenvalues(grid) + self.second.eigenvalues(grid)

    @property
    def is_trace_class(self) -> bool:
        return self.first.is_trace_class and self.second.is_trace_class



class BandSplit(AbstractCovariance):
    r"""One operator on the box band, another above it: $\lambda_k = \lambda^{\mathrm{in}}_k$
    for $|k_1|, |k_2| \le K$ and $\lambda^{\mathrm{out}}_k$ otherwise.

    Defined on the wavenumbers, so the same operator on every grid (a grid's folded Nyquist
    mode stands for $\pm n/2$, both inside or both outside the box). Made for the
    band-limited construction of a learned prior (docs/theory.md): with a network of cutoff
    $K$ the law above $K$ is exactly $N(0, Q^{\mathrm{out}})$, so `outside` only sets how
    visible that Gaussian part is on fine grids, while `inside` sets the noise the network
    learns to remove. Trace-class iff both parts are.

    **Arguments:**

    - `inside`: the operator on the band.
    - `outside`: the operator above it.
    - `cutoff`: the band $K \ge 0$ (an int).
    """

    inside: AbstractCovariance
    outside: AbstractCovariance
    cutoff: int = eqx.field(static=True)

    def __init__(self, inside, outside, cutoff):
        for name, part in (("inside", inside), ("outside", outside)):
            if not isinstance(part, AbstractCovariance):
                raise ValueError(f"`{name}` must be a covariance operator; got {part!r}.")
        if isinstance(cutoff, bool) or not isinstance(cutoff, numbers.Integral) or cutoff < 0:
            raise ValueError(f"`cutoff` must be an int >= 0; got {cutoff!r}.")
        self.inside = inside
        self.outside = outside
        self.cutoff = int(cutoff)

    def eigenvalues(self, grid: Grid) -> Spectrum:
        band = band_mask(grid.shape, self.cutoff)
        return band * self.inside.eigenvalues(grid) + (1 - band) * self.outside.eigenvalues(grid)

    @property
    def is_trace_class(self) -> bool:
        return self.inside.is_trace_class and self.outside.is_trace_class
