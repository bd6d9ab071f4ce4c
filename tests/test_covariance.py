import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import dense_pixel_covariance

from numpyro_fsdiff import VPSDE, Grid, band_mask, resample
from numpyro_fsdiff.covariance import BandSplit, Combined, LaplacianPower, Matern, WhiteNoise


def test_matern_eigenvalues_follow_the_formula():
    grid = Grid((6, 5), lengths=(2.0, 0.5))
    q = Matern(alpha=1.7, tau=2.0, scale=3.0)
    lam = np.asarray(q.eigenvalues(grid))
    k1, k2 = 1, -2  # grid index (1, 3) on axes of length 6 and 5
    expected = 9.0 * (4.0 + 4 * np.pi**2 * ((k1 / 2.0) ** 2 + (k2 / 0.5) ** 2)) ** -1.7
    np.testing.assert_allclose(lam[1, 3], expected, rtol=1e-5)
    # Even axis of 6: the Nyquist row k1 = -3 carries +3 and -3 (twice the eigenvalue).
    nyquist = 9.0 * (4.0 + 4 * np.pi**2 * (3 / 2.0) ** 2) ** -1.7
    np.testing.assert_allclose(lam[3, 0], 2 * nyquist, rtol=1e-5)


def test_laplacian_constant_mode_is_finite_and_configurable():
    grid = Grid((8, 8))
    default = LaplacianPower(alpha=1.5, scale=2.0)
    lam = np.asarray(default.eigenvalues(grid))
    np.testing.assert_allclose(lam[0, 0], 4.0 * (4 * np.pi**2) ** -1.5, rtol=1e-6)
    np.testing.assert_allclose(lam[0, 0], lam[0, 1], rtol=1e-6)  # equal to the lowest mode
    custom = LaplacianPower(alpha=1.5, scale=2.0, constant_mode=0.25)
    assert float(custom.eigenvalues(grid)[0, 0]) == pytest.approx(0.25)
    # The spatial mean of samples moves: its variance is lambda_0 / |D|.
    u = custom.sample(jax.random.key(3), grid, (4000,))
    np.testing.assert_allclose(jnp.var(u.mean(axis=(-2, -1))), 0.25, rtol=5 * np.sqrt(2 / 4000))
    with pytest.raises(ValueError, match="constant_mode"):
        LaplacianPower(alpha=1.5, constant_mode=0.0)


def _pixel_variance_tolerance(q, grid, num, sigmas=5.0):
    # mean over pixels and samples of u^2: Var = 2 sum_k mu_k^2 / N^2 / num for Gaussian u.
    mu = np.asarray(q.pixel_eigenvalues(grid), dtype=np.float64)
    return sigmas * np.sqrt(2 * np.sum(mu**2) / grid.size**2 / num)


@pytest.mark.parametrize(
    "q", [Matern(alpha=2.0, tau=5.0, scale=25.0), LaplacianPower(alpha=1.5, scale=5.0)]
)
def test_trace_class_pixel_variance_matches_and_converges(q):
    traces = []
    for i, n in enumerate([16, 32, 64, 128]):
        grid = Grid((n, n))
        num = 400
        u = q.sample(jax.random.key(i), grid, (num,))
        expected = float(q.trace(grid)) / grid.area
        assert abs(float(jnp.mean(u**2)) - expected) < _pixel_variance_tolerance(q, grid, num)
        traces.append(float(q.trace(grid)))
    assert q.is_trace_class
    # Cauchy convergence: each refinement changes the trace less than the one before.
    increments = np.abs(np.diff(traces))
    assert np.all(increments[1:] < 0.7 * increments[:-1])
    assert increments[-1] / traces[-1] < 2e-2


def test_white_noise_variance_grows_without_bound():
    q = WhiteNoise(scale=0.5)
    assert not q.is_trace_class
    for n in [16, 32, 64]:
        grid = Grid((n, n))
        u = q.sample(jax.random.key(n), grid, (50,))
        np.testing.assert_allclose(float(q.trace(grid)), 0.25 * n * n, rtol=1e-6)
        assert abs(float(jnp.mean(u**2)) - 0.25 * n * n) < _pixel_variance_tolerance(q, grid, 50)


def test_alpha_at_most_one_is_not_trace_class():
    q = Matern(alpha=1.0, tau=1.0)
    assert not q.is_trace_class
    traces = [float(q.trace(Grid((n, n)))) for n in (16, 64, 256)]
    # sum of |k|^-2 diverges logarithmically: equal increments per doubling squared.
    assert traces[2] - traces[1] > 0.8 * (traces[1] - traces[0]) > 0
    with pytest.raises(ValueError, match="covariance.*trace-class"):
        VPSDE(q)
    with pytest.raises(ValueError, match="covariance.*trace-class"):
        VPSDE(WhiteNoise(1.0))
    VPSDE(WhiteNoise(1.0), allow_non_trace_class=True)  # the explicit baseline
    assert not Combined(Matern(2.0, 1.0), WhiteNoise(1.0)).is_trace_class
    assert Combined(Matern(2.0, 1.0), LaplacianPower(1.5)).is_trace_class


@pytest.mark.parametrize(
    "fine,coarse", [((16, 12), (8, 6)), ((9, 8), (6, 4)), ((15, 15), (7, 7)), ((10, 9), (5, 9))]
)
@pytest.mark.parametrize("split", [False, True])
def test_nesting_coarsened_fine_law_is_the_coarse_law(fine, coarse, split, x64):
    # Covariance of resample(u_fine) = R Sigma_fine R^T, with R the (linear) coarsening matrix.
    q = Combined(Matern(alpha=1.5, tau=2.0, scale=3.0), LaplacianPower(alpha=2.0))
    if split:  # the same operator on every grid, its band's Nyquist folding included
        q = BandSplit(q, Matern(alpha=2.5, tau=3.0, scale=0.5), 2)
    fine_grid, coarse_grid = Grid(fine, (1.0, 1.5)), Grid(coarse, (1.0, 1.5))
    sigma_fine = dense_pixel_covariance(q, fine_grid)
    eye = jnp.eye(fine_grid.size).reshape((-1,) + fine)
    R = np.asarray(resample(eye, coarse).reshape(fine_grid.size, coarse_grid.size)).T
    sigma_coarse = dense_pixel_covariance(q, coarse_grid)
    np.testing.assert_allclose(R @ sigma_fine @ R.T, sigma_coarse, atol=1e-10 * sigma_coarse.max())


def test_operator_identities(key, x64):
    grid = Grid((12, 7), lengths=(1.0, 2.0))
    q = Matern(alpha=2.5, tau=1.0, scale=2.0)
    u = jax.random.normal(key, (2,) + grid.shape)
    np.testing.assert_allclose(q.sqrt_apply(q.sqrt_apply(u, grid), grid), q.apply(u, grid),
                               rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(q.inv_sqrt_apply(q.sqrt_apply(u, grid), grid), u, atol=1e-10)
    np.testing.assert_allclose(q.inv_apply(q.apply(u, grid), grid), u, atol=1e-9)
    # Self-adjoint in the L2 quadrature inner product.
    np.testing.assert_allclose(grid.inner(q.apply(u[0], grid), u[1]),
                               grid.inner(u[0], q.apply(u[1], grid)), rtol=1e-10)
    # Q acts on e_k by lambda_k: for cos(2 pi k.x/L) with k = (1, 2).
    x1, x2 = grid.coords()
    e = jnp.cos(2 * jnp.pi * (x1 / 1.0 + 2 * x2 / 2.0))
    lam = 4.0 * (1.0 + 4 * jnp.pi**2 * (1.0 + 1.0)) ** -2.5
    np.testing.assert_allclose(q.apply(e, grid), lam * e, atol=1e-12)
    sigma = dense_pixel_covariance(q, grid)
    _, logdet = np.linalg.slogdet(sigma)
    np.testing.assert_allclose(q.log_det(grid), logdet, rtol=1e-8)


def test_sampling_is_practical_at_512():
    q = Matern(alpha=2.0, tau=5.0, scale=25.0)
    grid = Grid((512, 512))
    u = q.sample(jax.random.key(0), grid, (2,))
    assert u.shape == (2, 512, 512)
    # Standardised unitary Fourier coefficients: real and imaginary parts carry unit total
    # variance per mode, 2 * 512^2 of them, so the mean square is 1 +- 5 sqrt(2 / (2 N)).
    z = jnp.fft.fft2(u, norm="ortho") / jnp.sqrt(q.pixel_eigenvalues(grid))
    assert abs(float(jnp.mean(jnp.abs(z) ** 2)) - 1) < 5 * np.sqrt(1 / grid.size)


@pytest.mark.parametrize(
    "make,name",
    [
        (lambda: Matern(alpha=2.0, tau=0.0), "tau"),
        (lambda: Matern(alpha=2.0, tau=-1.0), "tau"),
        (lambda: Matern(alpha=0.0), "alpha"),
        (lambda: Matern(alpha=2.0, scale=-2.0), "scale"),
        (lambda: Matern(alpha=2.0, scale=float("nan")), "scale"),
        (lambda: LaplacianPower(alpha=-1.0), "alpha"),
        (lambda: WhiteNoise(scale=0.0), "scale"),
        (lambda: Combined(Matern(), 3.0), "second"),
        (lambda: BandSplit(3.0, Matern(), 2), "inside"),
        (lambda: BandSplit(Matern(), Matern(), -1), "cutoff"),
        (lambda: BandSplit(Matern(), Matern(), 2.5), "cutoff"),
    ],
)
def test_bad_parameters_name_the_argument(make, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        make()


def test_trace_class_error_prints_the_parameter_values():
    with pytest.raises(ValueError, match=r"Matern\(alpha=1\.0, tau=3\.0, scale=2\.0\)"):
        VPSDE(Matern(alpha=1.0, tau=3.0, scale=2.0))
    text = Combined(Matern(2.0, 3.0), WhiteNoise(0.5)).describe()
    assert text == (
        "Combined(first=Matern(alpha=2.0, tau=3.0, scale=1.0), second=WhiteNoise(scale=0.5))"
    )


def test_band_split_takes_each_operator_on_its_side_of_the_box():
    inside, outside = Matern(1.5, 10.0, 8.0), Matern(2.5, 3.0, 15.0)
    q = BandSplit(inside, outside, 3)
    grid = Grid((12, 10))
    band = np.asarray(band_mask(grid.shape, 3)) > 0
    lam = np.asarray(q.eigenvalues(grid))
    np.testing.assert_array_equal(lam[band], np.asarray(inside.eigenvalues(grid))[band])
    np.testing.assert_array_equal(lam[~band], np.asarray(outside.eigenvalues(grid))[~band])
    assert q.is_trace_class and not BandSplit(inside, WhiteNoise(1.0), 3).is_trace_class
