r"""Linear observation operators defined in function space.

Every operator maps the point values of one field $u$ on a grid to a data array $y = A u$
(vmap outside for batches). Each is defined on the *function* $u$ the grid represents (its
band-limited trigonometric interpolant), with blur widths, mask regions, cells and sensor
locations in units of the domain $D$, so the same operator gives the same observation of a
band-limited function on every grid that resolves it, and an observation made on a 28 x 28
image can be inverted on a 56 x 56 grid.

**Inner products.** The adjoint $A^*$ is taken with respect to the $L^2(D)$ quadrature on the
field side ([`Grid.inner`][numpyro_fsdiff.Grid.inner], $\langle u, v\rangle = \frac{|D|}{N}
\sum_j u_j v_j$) and the Euclidean inner product on the data side, so that
$\langle A u, y\rangle_{\mathbb{R}^M} = \langle u, A^* y\rangle_{L^2(D)}$. In pixel terms
$A^* = A^\top / (|D|/N)$; `transpose` gives $A^\top$ itself.
"""

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import Array, ArrayLike, Field, Float, Spectrum
from .._grid import Grid, fourier_multiply
from .._validation import check_data, check_field_shape, check_positive, is_concrete

ObservationField = Float[Array, "m1 m2"]
"""Data that are point values on an observation grid of shape `(m1, m2)`."""


def _coords_np(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Grid coordinates as NumPy arrays (computed at trace time, never traced)."""
    axes = [np.arange(n) * (length / n) for n, length in zip(grid.shape, grid.lengths)]
    x1, x2 = np.meshgrid(*axes, indexing="ij")
    return x1, x2


def _frequencies(grid: Grid) -> tuple[Array, Array]:
    """Physical frequencies $(k_1/L_1, k_2/L_2)$ in `numpy.fft.fft2` layout."""
    k1, k2 = grid.wavenumbers()
    return k1 / grid.lengths[0], k2 / grid.lengths[1]


def _axis_basis(n: int, length: float, x: ArrayLike) -> Array:
    r"""The trigonometric basis of one axis at coordinates `x`, shape `(n, len(x))`.

    Row $k$ (in `fftfreq` order) is $e^{2\pi i k x / L}$; on an even axis the Nyquist row is
    $\cos(\pi n x / L)$, the real interpolant's even split of the mode $\pm n/2$ (the same
    convention as [`resample`][numpyro_fsdiff.resample]).
    """
    k = np.rint(np.fft.fftfreq(n, 1.0 / n))
    phase = 2 * jnp.pi * jnp.asarray(k)[:, None] * jnp.asarray(x)[None, :] / length
    basis = jnp.exp(1j * phase)
    if n % 2 == 0:
        basis = basis.at[n // 2].set(jnp.cos(jnp.pi * n * jnp.asarray(x) / length))
    return basis


def _evaluate_points(v: Field, grid: Grid, points: ArrayLike) -> Float[Array, " M"]:
    r"""The trigonometric interpolant of `v` at arbitrary points, by the direct sum
    $u(x_p) = \frac1N \operatorname{Re}\sum_k \hat v_k E_1[k_1, p] E_2[k_2, p]$, $O(NM)$."""
    e1 = _axis_basis(grid.shape[0], grid.lengths[0], points[:, 0])
    e2 = _axis_basis(grid.shape[1], grid.lengths[1], points[:, 1])
    coeffs = jnp.fft.fft2(v)
    partial = coeffs @ e2  # (n1, M)
    return (jnp.sum(e1 * partial, axis=0).real / grid.size).astype(v.dtype)


def _evaluate_points_transpose(y: Float[Array, " M"], grid: Grid, points: ArrayLike) -> Field:
    """The pixel transpose of `_evaluate_points`."""
    e1 = _axis_basis(grid.shape[0], grid.lengths[0], points[:, 0])
    e2 = _axis_basis(grid.shape[1], grid.lengths[1], points[:, 1])
    a = (e1 * y[None, :]) @ e2.T  # (n1, n2)
    return (jnp.fft.fft2(a).real / grid.size).astype(y.dtype)


def _grid_points_1d(n_obs: int, length: float) -> np.ndarray:
    return np.arange(n_obs) * (length / n_obs)


def _evaluate_grid(v: Field, grid: Grid, shape: tuple[int, int]) -> ObservationField:
    """The interpolant of `v` at the points of the grid of `shape` on the same domain.

    Strided subsampling when `grid.shape` is a multiple of `shape` (exact: the interpolant
    passes through the grid values), else the separable direct sum $\\frac1N
    \\operatorname{Re}(E_1^\\top \\hat v E_2)$.
    """
    if shape == grid.shape:
        return v
    if all(n % m == 0 for n, m in zip(grid.shape, shape)):
        f1, f2 = (n // m for n, m in zip(grid.shape, shape))
        return v[::f1, ::f2]
    e1 = _axis_basis(grid.shape[0], grid.lengths[0], _grid_points_1d(shape[0], grid.lengths[0]))
    e2 = _axis_basis(grid.shape[1], grid.lengths[1], _grid_points_1d(shape[1], grid.lengths[1]))
    return ((e1.T @ jnp.fft.fft2(v) @ e2).real / grid.size).astype(v.dtype)


def _evaluate_grid_transpose(y: ObservationField, grid: Grid, shape: tuple[int, int]) -> Field:
    """The pixel transpose of `_evaluate_grid`."""
    if shape == grid.shape:
        return y
    if all(n % m == 0 for n, m in zip(grid.shape, shape)):
        f1, f2 = (n // m for n, m in zip(grid.shape, shape))
        return jnp.zeros(grid.shape, y.dtype).at[::f1, ::f2].set(y)
    e1 = _axis_basis(grid.shape[0], grid.lengths[0], _grid_points_1d(shape[0], grid.lengths[0]))
    e2 = _axis_basis(grid.shape[1], grid.lengths[1], _grid_points_1d(shape[1], grid.lengths[1]))
    return (jnp.fft.fft2(e1 @ y @ e2.T).real / grid.size).astype(y.dtype)


def _check_shape_arg(shape) -> tuple[int, int] | None:
    if shape is None:
        return None
    return Grid(shape).shape  # validates: two ints >= 2


class AbstractOperator(eqx.Module):
    r"""A linear observation operator $A$ from fields on a grid to data arrays.

    Subclasses implement `__call__(u, grid)` on one field of shape `grid.shape` and
    `data_shape(grid)`; `transpose` defaults to `jax.linear_transpose` of `__call__` and is
    overridden where a closed form is cheaper. The adjoint is

    $$A^* y = \frac{N}{|D|} A^\top y, \qquad \langle A u, y\rangle_{\mathbb{R}^M} =
    \langle u, A^* y\rangle_{L^2(D)},$$

    with the $L^2(D)$ quadrature of [`Grid.inner`][numpyro_fsdiff.Grid.inner] on the field
    side and the Euclidean inner product on the data side (the one the Gaussian likelihood
    $y \sim N(Au, \sigma^2 I)$ uses).
    """

    @abc.abstractmethod
    def __call__(self, u: Field, grid: Grid) -> Array:
        """The observation $A u$ of one field `u` of shape `grid.shape`."""

    @abc.abstractmethod
    def data_shape(self, grid: Grid) -> tuple[int, ...]:
        """The shape of $A u$ for fields on `grid`."""

    def transpose(self, y: Array, grid: Grid) -> Field:
        r"""The pixel transpose $A^\top y$ (Euclidean inner products on both sides)."""
        y = self.check_data(y, grid)
        zero = jax.ShapeDtypeStruct(grid.shape, jnp.result_type(y))
        (out,) = jax.linear_transpose(lambda u: self(u, grid), zero)(y)
        return out

    def adjoint(self, y: Array, grid: Grid) -> Field:
        r"""The adjoint $A^* y = A^\top y \,/\, (|D|/N)$ with respect to $L^2(D)$ on the field
        side and the Euclidean inner product on the data side."""
        return self.transpose(y, grid) / grid.cell_area

    def matrix(self, grid: Grid) -> Float[Array, "M N"]:
        """The dense pixel matrix of $A$ on `grid`, shape `(prod(data_shape), N)` (small grids)."""
        eye = jnp.eye(grid.size).reshape((grid.size,) + grid.shape)
        rows = jax.vmap(lambda e: self(e, grid))(eye)
        return rows.reshape(grid.size, -1).T

    def check_field(self, u, grid: Grid, name: str = "u") -> None:
        """Raise a `ValueError` unless `u` is one field of shape `grid.shape`."""
        if not isinstance(grid, Grid):
            raise ValueError(f"`grid` must be a numpyro_fsdiff.Grid; got {grid!r}.")
        check_field_shape(name, u, grid.shape)
        if jnp.ndim(u) != 2:
            raise ValueError(
                f"`{name}` must be one field of shape {grid.shape} (vmap for batches); got shape "
                f"{jnp.shape(u)}."
            )
        if is_concrete(u):  # user data; traced fields (a sampler's) are not checked per call
            check_data(name, u)

    def check_data(self, y, grid: Grid, name: str = "y") -> Array:
        """Return the data `y` as an array, raising a `ValueError` naming `name` unless it has
        the shape `data_shape(grid)`, a real dtype and no NaN or inf (traced values: at run
        time, through `equinox.error_if`)."""
        expected = self.data_shape(grid)
        if tuple(jnp.shape(y)) != tuple(expected):
            raise ValueError(
                f"`{name}` must have shape {expected} to match {type(self).__name__} on a "
                f"{grid.shape} grid; got shape {tuple(jnp.shape(y))}."
            )
        return check_data(name, y)


class _AbstractFilterOperator(AbstractOperator):
    r"""A Fourier multiplier $\hat u(\xi) \mapsto \hat K(\xi) \hat u(\xi)$ (a periodic
    convolution), then the values at the points of an observation grid."""

    shape: tuple[int, int] | None = eqx.field(static=True)

    @abc.abstractmethod
    def multiplier(self, grid: Grid) -> Spectrum:
        r"""$\hat K(k/L)$ in `numpy.fft.fft2` layout."""

    def _observation_shape(self, grid: Grid) -> tuple[int, int]:
        return grid.shape if self.shape is None else self.shape

    def data_shape(self, grid: Grid) -> tuple[int, int]:
        return self._observation_shape(grid)

    def _filter(self, u: Field, grid: Grid) -> Field:
        return fourier_multiply(u, self.multiplier(grid))

    def _filter_transpose(self, y: Field, grid: Grid) -> Field:
        return fourier_multiply(y, self.multiplier(grid))  # real and even: symmetric

    def __call__(self, u: Field, grid: Grid) -> ObservationField:
        self.check_field(u, grid)
        return _evaluate_grid(self._filter(u, grid), grid, self._observation_shape(grid))

    def transpose(self, y: ObservationField, grid: Grid) -> Field:
        y = self.check_data(y, grid)
        back = _evaluate_grid_transpose(y, grid, self._observation_shape(grid))
        return self._filter_transpose(back, grid)


class GaussianBlur(_AbstractFilterOperator):
    r"""Periodic convolution with a Gaussian kernel of standard deviation `width`.

    $$\widehat{A u}(\xi) = e^{-2\pi^2 w^2 |\xi|^2}\, \hat u(\xi), \qquad \xi = k / L,$$

    computed by FFT, then observed at the points of the observation grid `shape` (by default
    the field's own grid). The width is in units of the domain (a blur of 1.5 pixels of a
    28 x 28 image on the unit square is `width=1.5/28`), so the kernel is the same function
    on every grid.

    **Arguments:**

    - `width`: the kernel's standard deviation $w > 0$, in domain units.
    - `shape`: the observation grid `(m1, m2)`, or `None` for the field's grid. Give it to
      pose a problem whose data do not depend on the grid the unknown lives on.
    """

    width: Float[Array, ""]

    def __init__(self, width, *, shape=None):
        check_positive("width", width)
        self.width = jnp.asarray(width, dtype=jnp.result_type(float))
        self.shape = _check_shape_arg(shape)

    def multiplier(self, grid: Grid) -> Spectrum:
        return jnp.exp(-2 * jnp.pi**2 * self.width**2 * grid.frequencies_squared())


class MotionBlur(AbstractOperator):
    r"""Convolution with a uniform line segment: a non-symmetric motion blur.

    The kernel is the uniform probability measure on $\{s d : 0 \le s \le \ell\}$,
    $d = (\cos\theta, \sin\theta)$, so $(A u)(x) = \frac1\ell\int_0^\ell u(x - s d)\,ds$ (the
    image smeared along the direction of motion). Its exact Fourier transform,

    $$\hat K(\xi) = e^{-i\pi \ell\, \xi\cdot d}\, \operatorname{sinc}(\ell\, \xi \cdot d),
    \qquad \operatorname{sinc} z = \frac{\sin \pi z}{\pi z},$$

    multiplies the Fourier coefficients, so the blur is the same function on every grid;
    $\hat K(-\xi) = \overline{\hat K(\xi)}$ and $A^\top$ uses $\overline{\hat K}$.

    **Arguments:**

    - `length`: $\ell > 0$, in domain units.
    - `angle`: $\theta$ in radians from the first axis towards the second.
    - `shape`: the observation grid `(m1, m2)`, or `None` for the field's grid.
    """

    length: Float[Array, ""]
    angle: Float[Array, ""]
    shape: tuple[int, int] | None = eqx.field(static=True)

    def __init__(self, length, angle=0.0, *, shape=None):
        check_positive("length", length)
        self.length = jnp.asarray(length, dtype=jnp.result_type(float))
        self.angle = jnp.asarray(angle, dtype=jnp.result_type(float))
        self.shape = _check_shape_arg(shape)

    def multiplier(self, grid: Grid) -> Array:
        r"""$\hat K(k/L)$ (complex) in `numpy.fft.fft2` layout."""
        xi1, xi2 = _frequencies(grid)
        z = self.length * (xi1 * jnp.cos(self.angle) + xi2 * jnp.sin(self.angle))
        return jnp.exp(-1j * jnp.pi * z) * jnp.sinc(z)

    def data_shape(self, grid: Grid) -> tuple[int, int]:
        return grid.shape if self.shape is None else self.shape

    def __call__(self, u: Field, grid: Grid) -> ObservationField:
        self.check_field(u, grid)
        blurred = jnp.fft.ifft2(self.multiplier(grid) * jnp.fft.fft2(u)).real.astype(u.dtype)
        return _evaluate_grid(blurred, grid, self.data_shape(grid))

    def transpose(self, y: ObservationField, grid: Grid) -> Field:
        y = self.check_data(y, grid)
        back = _evaluate_grid_transpose(y, grid, self.data_shape(grid))
        conj = jnp.conj(self.multiplier(grid))
        return jnp.fft.ifft2(conj * jnp.fft.fft2(back)).real.astype(y.dtype)


class CellAverage(_AbstractFilterOperator):
    r"""Averages over the cells of a coarse grid (super-resolution's forward model).

    For the coarse grid of `shape` $(m_1, m_2)$ with spacing $h_i = L_i / m_i$, the datum at
    coarse point $c_j$ is the average of (the band-limited interpolant of) $u$ over the cell
    of size $h_1 \times h_2$ centred on $c_j$ (the convention of `resample(method="area")`):

    $$y_j = \frac{1}{h_1 h_2}\int_{c_j + [-h/2, h/2]^2} u, \qquad
    \widehat{\text{box}}(\xi) = \operatorname{sinc}(h_1 \xi_1)\operatorname{sinc}(h_2\xi_2).$$

    It is computed spectrally (the box multiplier, then the values at the coarse points), so
    it is exact for any fine grid and the same function of $u$ on every grid.

    **Arguments:**

    - `shape`: the coarse grid `(m1, m2)`.
    """

    def __init__(self, shape):
        self.shape = _check_shape_arg(shape)

    def multiplier(self, grid: Grid) -> Spectrum:
        xi1, xi2 = _frequencies(grid)
        h1, h2 = (length / m for length, m in zip(grid.lengths, self.shape))
        return jnp.sinc(h1 * xi1) * jnp.sinc(h2 * xi2)


_Region = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _as_static_mask(observed) -> tuple[tuple[bool, ...], ...]:
    arr = np.asarray(observed)
    if arr.dtype != bool or arr.ndim != 2:
        raise ValueError(
            f"`observed` must be a boolean function of the coordinates or a 2-D boolean array; "
            f"got an array of dtype {arr.dtype} and shape {arr.shape}."
        )
    return tuple(tuple(bool(b) for b in row) for row in arr)


class Mask(AbstractOperator):
    r"""Inpainting: the values of $u$ at the points of an observation grid inside a region.

    $(A u)_p = u(x_p)$ for the points $x_p$ of the observation grid `shape` (by default the
    field's grid) where `observed` is true, flattened in C order; $u$ is evaluated through its
    trigonometric interpolant, which is a plain subsampling when the field's grid is a
    multiple of the observation grid. The data are a vector of length $M$.

    **Arguments:**

    - `observed`: a function `(x1, x2) -> bool array` of the (NumPy) coordinate arrays in
      domain units, true where observed, e.g. `lambda x1, x2: abs(x1 - 0.5) > 0.2`; or a
      boolean array of the observation grid's shape (then `shape` defaults to its shape).
    - `shape`: the observation grid `(m1, m2)`.

    **Raises:** `ValueError` if the region observes no point.
    """

    observed: _Region | tuple[tuple[bool, ...], ...] = eqx.field(static=True)
    shape: tuple[int, int] | None = eqx.field(static=True)

    def __init__(self, observed, *, shape=None):
        if callable(observed):
            self.observed = observed
            self.shape = _check_shape_arg(shape)
        else:
            self.observed = _as_static_mask(observed)
            arr_shape = (len(self.observed), len(self.observed[0]))
            if shape is not None and tuple(shape) != arr_shape:
                raise ValueError(
                    f"`shape` must match the boolean `observed` array's shape {arr_shape}; got "
                    f"{tuple(shape)}."
                )
            self.shape = _check_shape_arg(arr_shape)
        if self.shape is not None:
            self.indicator(Grid(self.shape))  # raises if it observes nothing

    def _observation_grid(self, grid: Grid) -> Grid:
        return grid if self.shape is None else grid.with_shape(self.shape)

    def indicator(self, grid: Grid) -> np.ndarray:
        """The boolean array of observed points on the observation grid (for fields on `grid`)."""
        obs = self._observation_grid(grid)
        if callable(self.observed):
            mask = np.asarray(self.observed(*_coords_np(obs)))
            if mask.shape != obs.shape or mask.dtype != bool:
                raise ValueError(
                    f"`observed` must return a boolean array of shape {obs.shape}; got dtype "
                    f"{mask.dtype} and shape {mask.shape}."
                )
        else:
            mask = np.asarray(self.observed, dtype=bool)
        if not mask.any():
            raise ValueError(
                f"`observed` selects no point of the {obs.shape} observation grid: the mask "
                "observes nothing."
            )
        return mask

    def data_shape(self, grid: Grid) -> tuple[int]:
        return (int(self.indicator(grid).sum()),)

    def __call__(self, u: Field, grid: Grid) -> Float[Array, " M"]:
        self.check_field(u, grid)
        obs = self._observation_grid(grid)
        values = _evaluate_grid(u, grid, obs.shape)
        return values[self.indicator(grid)]

    def transpose(self, y: Float[Array, " M"], grid: Grid) -> Field:
        y = self.check_data(y, grid)
        obs = self._observation_grid(grid)
        full = jnp.zeros(obs.shape, y.dtype).at[self.indicator(grid)].set(y)
        return _evaluate_grid_transpose(full, grid, obs.shape)

    def embed(self, y: Float[Array, " M"], grid: Grid, fill=jnp.nan) -> ObservationField:
        """The data placed on the observation grid, `fill` where unobserved (for plotting)."""
        y = self.check_data(y, grid)
        obs = self._observation_grid(grid)
        return jnp.full(obs.shape, fill, y.dtype).at[self.indicator(grid)].set(y)


class PointObservations(AbstractOperator):
    r"""Sparse sensors: the values of $u$ at arbitrary points of the domain.

    $(A u)_p = u(x_p)$ through the band-limited trigonometric interpolant of the grid values,
    evaluated by the direct nonuniform DFT sum

    $$u(x) = \frac1N \operatorname{Re}\sum_{k\in K_n} \hat u_k\, e^{2\pi i (k_1 x_1/L_1 +
    k_2 x_2/L_2)}$$

    ($O(NM)$, with the Nyquist modes of even axes split evenly as in
    [`resample`][numpyro_fsdiff.resample]), so a band-limited function gives the same data on
    every grid that resolves it.

    **Arguments:**

    - `locations`: an array of shape `(M, 2)` of points in domain units.
    """

    locations: Float[Array, "M 2"]

    def __init__(self, locations):
        locations = jnp.asarray(locations, dtype=jnp.result_type(float))
        if locations.ndim != 2 or locations.shape[1] != 2 or locations.shape[0] < 1:
            raise ValueError(
                f"`locations` must be an array of shape (M, 2) with M >= 1; got shape "
                f"{tuple(locations.shape)}."
            )
        if not bool(jnp.all(jnp.isfinite(locations))):
            raise ValueError("`locations` contains NaN or inf values.")
        self.locations = locations

    def data_shape(self, grid: Grid) -> tuple[int]:
        return (self.locations.shape[0],)

    def __call__(self, u: Field, grid: Grid) -> Float[Array, " M"]:
        self.check_field(u, grid)
        return _evaluate_points(u, grid, self.locations)

    def transpose(self, y: Float[Array, " M"], grid: Grid) -> Field:
        y = self.check_data(y, grid)
        return _evaluate_points_transpose(y, grid, self.locations)


class Compose(AbstractOperator):
    r"""The composition $A_1 \circ A_2 \circ \dots \circ A_n$ (the last one acts first).

    Every inner operator must return a field (a 2-D data shape); the next one acts on it as a
    field on the grid of that shape over the same domain. With $g_i$ the grid that $A_i$ acts
    on, the pixel transpose is $A_n^\top \cdots A_1^\top$, and the adjoint follows from it as
    for every operator.

    !!! example

        ```python
        # blur, then observe outside a central square on the 28 x 28 grid
        op = Compose(Mask(lambda x1, x2: abs(x1 - 0.5) + abs(x2 - 0.5) > 0.3),
                     GaussianBlur(1 / 28, shape=(28, 28)))
        grid = fsd.Grid((56, 56))            # the unknown may live on a finer grid
        y = op(jnp.ones(grid.shape), grid)   # shape op.data_shape(grid)
        ```

    **Arguments:**

    - `*operators`: two or more operators, outermost first.
    """

    operators: tuple[AbstractOperator, ...]

    def __init__(self, *operators):
        if len(operators) < 1:
            raise ValueError("`operators` must hold at least one operator; got none.")
        for i, op in enumerate(operators):
            if not isinstance(op, AbstractOperator):
                raise ValueError(f"`operators[{i}]` must be an observation operator; got {op!r}.")
        self.operators = tuple(operators)

    def _grids(self, grid: Grid) -> list[Grid]:
        """The grid each operator acts on, innermost first."""
        grids = [grid]
        for i, op in enumerate(reversed(self.operators[1:])):
            shape = op.data_shape(grids[-1])
            if len(shape) != 2:
                raise ValueError(
                    f"`operators[{len(self.operators) - 1 - i}]` ({type(op).__name__}) must "
                    f"return a field to be composed with; its data shape is {shape}."
                )
            grids.append(grids[-1].with_shape(shape))
        return grids

    def data_shape(self, grid: Grid) -> tuple[int, ...]:
        return self.operators[0].data_shape(self._grids(grid)[-1])

    def __call__(self, u: Field, grid: Grid) -> Array:
        self.check_field(u, grid)
        for op, g in zip(reversed(self.operators), self._grids(grid)):
            u = op(u, g)
        return u

    def transpose(self, y: Array, grid: Grid) -> Field:
        y = self.check_data(y, grid)
        for op, g in zip(self.operators, reversed(self._grids(grid))):
            y = op.transpose(y, g)
        return y


def naive_inverse(y: Array, operator: AbstractOperator, grid: Grid, *, rcond=1e-3) -> Field:
    r"""The truncated Moore-Penrose pseudo-inverse $A^+ y$ on `grid`, the baseline a
    posterior mean should beat.

    Built from the dense pixel matrix (grids up to a few thousand points), with singular
    values below `rcond` times the largest treated as zero. For a mask it is the zero-filled
    observation, for a cell average the minimum-norm field with those averages, for a blur a
    regularised deconvolution.
    """
    y = operator.check_data(y, grid)
    matrix = operator.matrix(grid)
    pinv = jnp.linalg.pinv(matrix, rtol=rcond)
    return (pinv @ jnp.ravel(y)).reshape(grid.shape)
