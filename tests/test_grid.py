import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_fsdiff import Grid, band_grid_shape, band_limit, fourier_multiply, resample

SHAPES = [(8, 8), (7, 9), (6, 11), (5, 4)]


def band_limited(grid: Grid, modes=((1, 2), (2, -1), (0, 1))):
    """A real trigonometric polynomial with the given wavenumbers, evaluated on `grid`."""
    x1, x2 = grid.coords()
    L1, L2 = grid.lengths
    u = 0.3 * jnp.ones(grid.shape)
    for i, (k1, k2) in enumerate(modes):
        phase = 2 * jnp.pi * (k1 * x1 / L1 + k2 * x2 / L2)
        u = u + (i + 1) * jnp.cos(phase + 0.2 * i) + 0.5 * jnp.sin(phase)
    return u


def test_grid_properties_and_coordinates():
    grid = Grid((4, 6), lengths=(2.0, 3.0))
    assert grid.size == 24 and grid.area == 6.0 and grid.cell_area == 0.25
    x1, x2 = grid.coords()
    np.testing.assert_allclose(x1[:, 0], [0.0, 0.5, 1.0, 1.5])
    np.testing.assert_allclose(x2[0], [0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    k1, k2 = grid.wavenumbers()
    np.testing.assert_array_equal(k1[:, 0], np.fft.fftfreq(4, 1 / 4))
    np.testing.assert_array_equal(k2[0], np.fft.fftfreq(6, 1 / 6))
    np.testing.assert_allclose(grid.frequencies_squared()[1, 2], (1 / 2.0) ** 2 + (2 / 3.0) ** 2)
    mult = np.asarray(grid.nyquist_multiplicity())
    assert mult[2, 3] == 4 and mult[2, 0] == 2 and mult[0, 3] == 2 and mult[1, 1] == 1


def test_quadrature_inner_product_is_l2():
    # <cos(2 pi x1), cos(2 pi x1)>_{L2} = |D| / 2 exactly on any grid with n1 >= 3.
    for shape in [(3, 5), (8, 8), (13, 4)]:
        grid = Grid(shape, lengths=(1.0, 2.0))
        x1, _ = grid.coords()
        u = jnp.cos(2 * jnp.pi * x1)
        np.testing.assert_allclose(grid.inner(u, u), grid.area / 2, rtol=1e-5)
        np.testing.assert_allclose(grid.inner(jnp.ones(shape), jnp.ones(shape)), grid.area)


@pytest.mark.parametrize("shape", [(1, 8), (8, 1), (8,), (0, 4), (8.5, 8), (8.0, 8), (True, 8)])
def test_grid_rejects_bad_shape(shape):
    with pytest.raises(ValueError, match="`shape` must be"):
        Grid(shape)


def test_grid_accepts_numpy_and_jax_integers():
    assert Grid((np.int64(8), np.int32(6))).shape == (8, 6)
    assert Grid(np.array([8, 6])).shape == (8, 6)
    assert Grid(jnp.array([8, 6])).shape == (8, 6)
    assert all(type(n) is int for n in Grid((np.int64(8), 6)).shape)


@pytest.mark.parametrize("shape", [(8, 8), (9, 7)])
def test_band_limit_is_the_box_projection(shape):
    u = jax.random.normal(jax.random.key(0), shape)
    k1, k2 = Grid(shape).wavenumbers()
    keep = (jnp.abs(k1) <= 2) & (jnp.abs(k2) <= 2)
    expected = jnp.fft.ifft2(jnp.where(keep, jnp.fft.fft2(u), 0)).real
    np.testing.assert_allclose(band_limit(u, 2), expected, atol=1e-6)
    np.testing.assert_allclose(band_limit(band_limit(u, 2), 2), band_limit(u, 2), atol=1e-6)
    # Band-limited fields are the same function on every grid that resolves the band.
    low = band_limit(u, 2)
    fine = resample(low, band_grid_shape(2) if shape == (8, 8) else (18, 14))
    np.testing.assert_allclose(band_limit(fine, 2), fine, atol=1e-5)
    with pytest.raises(ValueError, match="`cutoff` must be"):
        band_limit(u, -1)


def test_grid_rejects_bad_lengths():
    with pytest.raises(ValueError, match="lengths"):
        Grid((8, 8), lengths=(1.0, -1.0))
    with pytest.raises(ValueError, match="lengths"):
        Grid((8, 8), lengths=(1.0,))


@pytest.mark.parametrize("fine", [(16, 16), (15, 21)])
def test_resample_keeps_band_limited_values(fine):
    # Modes |k| <= 1 fit strictly inside every grid here, so both grids see the same function.
    modes = ((1, 1), (1, -1), (0, 1))
    u_fine = band_limited(Grid(fine, (1.0, 2.0)), modes)
    for coarse in SHAPES:
        u_coarse = band_limited(Grid(coarse, (1.0, 2.0)), modes)
        np.testing.assert_allclose(resample(u_coarse, fine), u_fine, atol=1e-5)
        np.testing.assert_allclose(resample(u_fine, coarse), u_coarse, atol=1e-5)


@pytest.mark.parametrize("fine", [(16, 16), (15, 21), (12, 13)])
def test_coarsen_of_refine_is_identity(fine, key):
    # Any field on the coarse grid, Nyquist modes included, survives the round trip.
    for coarse in SHAPES:
        u = jax.random.normal(key, (3,) + coarse)
        np.testing.assert_allclose(resample(resample(u, fine), coarse), u, atol=2e-5)


def test_refine_matches_trigonometric_interpolant_at_nyquist():
    # On 4 points, u_j = (-1)^j is cos(4 pi x) restricted to the grid: the real interpolant.
    coarse = jnp.outer(jnp.array([1.0, -1.0, 1.0, -1.0]), jnp.ones(3))
    fine = resample(coarse, (8, 3))
    x = jnp.arange(8) / 8
    np.testing.assert_allclose(fine[:, 0], jnp.cos(4 * jnp.pi * x), atol=1e-6)


def test_coarsen_drops_unresolved_modes():
    fine = Grid((16, 16))
    x1, _ = fine.coords()
    u = jnp.cos(2 * jnp.pi * x1) + jnp.cos(2 * jnp.pi * 6 * x1)  # k = 6 is beyond 8 x 8 (|k| <= 4)
    out = resample(u, (8, 8))
    np.testing.assert_allclose(out, jnp.cos(2 * jnp.pi * Grid((8, 8)).coords()[0]), atol=1e-5)


def test_area_average():
    fine = jax.random.normal(jax.random.key(1), (2, 12, 12))
    out = resample(fine, (4, 6), resampling="area")
    assert out.shape == (2, 4, 6)
    # The mean is preserved exactly, and a constant stays constant.
    np.testing.assert_allclose(out.mean(axis=(-2, -1)), fine.mean(axis=(-2, -1)), atol=1e-5)
    np.testing.assert_allclose(resample(jnp.full((9, 9), 2.5), (3, 3), resampling="area"), 2.5)
    # Odd factor 3: the coarse value at point 0 averages fine points -1, 0, 1 (periodic).
    row = jnp.arange(9.0)
    col = resample(jnp.outer(row, jnp.ones(3)), (3, 3), resampling="area")[:, 0]
    np.testing.assert_allclose(col, [(8 + 0 + 1) / 3, (2 + 3 + 4) / 3, (5 + 6 + 7) / 3], rtol=1e-6)
    with pytest.raises(ValueError, match="area"):
        resample(fine, (5, 6), resampling="area")


def test_resample_errors():
    with pytest.raises(ValueError, match="`u`"):
        resample(jnp.array([1.0, jnp.nan, 2.0, 3.0]).reshape(2, 2), (4, 4))
    with pytest.raises(ValueError, match="`u`"):
        resample(jnp.ones(4), (4, 4))
    with pytest.raises(ValueError, match="shape"):
        resample(jnp.ones((4, 4)), (1, 4))
    with pytest.raises(ValueError, match="`resampling` must be"):
        resample(jnp.ones((4, 4)), (8, 8), resampling="bilinear")


def test_resample_method_keyword_deprecated():
    fine = jax.random.normal(jax.random.key(1), (12, 12))
    with pytest.warns(DeprecationWarning, match="resampling="):
        old = resample(fine, (4, 4), method="area")
    np.testing.assert_array_equal(old, resample(fine, (4, 4), resampling="area"))


def test_resample_nan_inside_jit_raises():
    with pytest.raises(Exception, match="NaN"):
        jax.jit(lambda u: resample(u, (8, 8)))(jnp.full((4, 4), jnp.nan)).block_until_ready()


@pytest.mark.parametrize("shape", [(6, 6), (5, 7)])
def test_fourier_multiply_matches_full_fft(shape, key):
    grid = Grid(shape)
    m = 1.0 / (1.0 + grid.frequencies_squared())  # even in k
    u = jax.random.normal(key, (2,) + shape)
    reference = np.fft.ifft2(np.asarray(m) * np.fft.fft2(np.asarray(u))).real
    np.testing.assert_allclose(fourier_multiply(u, m), reference, atol=1e-6)
