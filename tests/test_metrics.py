"""Sample-quality metrics against direct computations and known values."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numpyro_fsdiff as fs
from numpyro_fsdiff import metrics
from numpyro_fsdiff.covariance import Matern

GRID = fs.Grid((6, 5), lengths=(1.0, 2.0))


def _fields(key, num, shift=0.0):
    return Matern(2.0, 3.0).sample(key, GRID, (num,)) + shift


def _direct_energy(x, y, weight, unbiased):
    """The energy distance from explicit differences (float64): U- or V-statistic."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    y = np.asarray(y, np.float64).reshape(len(y), -1)

    def mean_dist(a, b, within):
        d = np.sqrt(weight * np.sum((a[:, None] - b[None]) ** 2, -1))
        if within and unbiased:
            return d.sum() / (len(a) * (len(a) - 1))
        return d.mean()

    return 2 * mean_dist(x, y, False) - mean_dist(x, x, True) - mean_dist(y, y, True)


@pytest.mark.parametrize("unbiased", [True, False])
def test_energy_distance_matches_direct_computation(key, unbiased):
    kx, ky = jax.random.split(key)
    x, y = _fields(kx, 11), _fields(ky, 7, shift=0.3)
    # batch_size 3 does not divide 11 or 7: the remainder path is exercised.
    got = metrics.energy_distance(x, y, grid=GRID, batch_size=3, unbiased=unbiased)
    np.testing.assert_allclose(got, _direct_energy(x, y, GRID.cell_area, unbiased), rtol=2e-4)
    flat = metrics.energy_distance(x.reshape(11, -1), y.reshape(7, -1), unbiased=unbiased)
    np.testing.assert_allclose(flat, _direct_energy(x, y, 1.0, unbiased), rtol=2e-4)


def test_energy_distance_self_is_zero_and_shift_is_positive(key):
    k1, k2, k3 = jax.random.split(key, 3)
    x = _fields(k1, 400)
    assert float(metrics.energy_distance(x, x, grid=GRID, unbiased=False)) == pytest.approx(
        0.0, abs=1e-6
    )
    same_law = float(metrics.energy_distance(x, _fields(k2, 400), grid=GRID))
    shifted = float(metrics.energy_distance(x, _fields(k3, 400, shift=0.5), grid=GRID))
    # A mean shift of 0.5 in L2(D) (|D| = 2, so ||shift|| = 0.71) versus sampling noise.
    assert shifted > 0.1 and shifted > 10 * abs(same_law), (shifted, same_law)


def test_energy_u_statistic_is_unbiased_and_v_statistic_is_not():
    """Over 300 replications of two samples of 6 from one 4-dimensional Gaussian law, the
    U-statistic's mean is 0 within 3 standard errors; the V-statistic's exceeds 0 by more
    than 3 standard errors (its bias is E|X - X'| (1/n + 1/m), about 0.9 here)."""
    keys = jax.random.split(jax.random.key(7), 300)
    u, v = [], []
    for k in keys:
        x, y = jax.random.normal(k, (2, 6, 4))
        u.append(float(metrics.energy_distance(x, y)))
        v.append(float(metrics.energy_distance(x, y, unbiased=False)))
    u, v = np.asarray(u), np.asarray(v)
    se_u, se_v = u.std(ddof=1) / np.sqrt(len(u)), v.std(ddof=1) / np.sqrt(len(v))
    assert abs(u.mean()) < 3 * se_u, (u.mean(), se_u)
    assert v.mean() > 3 * se_v, (v.mean(), se_v)


def test_energy_distance_bad_input():
    with pytest.raises(ValueError, match=r"`batch_size` must be an int >= 1"):
        metrics.energy_distance(jnp.zeros((3, 6, 5)), jnp.zeros((3, 6, 5)), batch_size=0)
    with pytest.raises(ValueError, match=r"`x` and `y` must have the same field shape"):
        metrics.energy_distance(jnp.zeros((3, 30)), jnp.zeros((3, 25)))
    with pytest.raises(ValueError, match=r"`y` must have shape"):
        metrics.energy_distance(jnp.zeros((3, 6, 5)), jnp.zeros((3, 5, 5)), grid=GRID)
    with pytest.raises(ValueError, match=r"at least 2 samples each"):
        metrics.energy_distance(jnp.zeros((1, 6, 5)), jnp.zeros((3, 6, 5)))
    with pytest.warns(DeprecationWarning, match=r"`chunk_size=` is deprecated"):
        metrics.energy_distance(jnp.zeros((3, 6, 5)), jnp.ones((3, 6, 5)), chunk_size=2)


def test_vendi_score_known_values(key):
    x = jnp.broadcast_to(_fields(key, 1), (8, 6, 5))
    for kernel in ("cosine", "rbf"):
        score = float(metrics.vendi_score(x, grid=GRID, kernel=kernel))
        assert score == pytest.approx(1.0, abs=1e-4)
    # n mutually orthogonal samples: n distinct.
    eye = jnp.eye(30)[:5].reshape(5, 6, 5)
    assert float(metrics.vendi_score(eye, grid=GRID)) == pytest.approx(5.0, rel=1e-4)
    # two groups of equal size, orthogonal to each other: 2.
    two = jnp.concatenate([jnp.broadcast_to(e, (4, 6, 5)) for e in eye[:2]])
    assert float(metrics.vendi_score(two, grid=GRID)) == pytest.approx(2.0, rel=1e-4)
    with pytest.raises(ValueError, match="`kernel`"):
        metrics.vendi_score(eye, kernel="laplace")


def test_gaussian_w2_known_values_and_sampling_floor(key):
    a = jnp.array([[4.0, 1.0], [0.0, 9.0]])
    b = jnp.array([[1.0, 1.0], [1.0, 4.0]])
    # (2-1)^2 + 0 + (0-1)^2 + (3-2)^2 = 3
    np.testing.assert_allclose(metrics.gaussian_w2_spectra(a, b), np.sqrt(3.0), rtol=1e-6)
    grid = fs.Grid((15, 15))  # odd: every mode but k = 0 is complex, in 112 pairs (k, -k)
    cov = Matern(2.0, 3.0)
    num = 1000
    x = cov.sample(key, grid, (num,))
    c = cov.eigenvalues(grid)
    c_hat = metrics.empirical_spectrum(x, grid)
    # Whitened per mode, W2^2 = sum_k (sqrt(c_hat_k / c_k) - 1)^2 has mean 1/(4 num) per complex
    # mode and 1/(2 num) for k = 0; each pair's term is ~ chi^2_2-distributed, so over 112 pairs
    # the sum has relative standard deviation about 1/sqrt(112) ~ 0.095: a +-50% band is > 5 sigma.
    whitened = float(metrics.gaussian_w2_spectra(c_hat / c, jnp.ones_like(c))) ** 2
    expected = (grid.size - 1) / (4 * num) + 1 / (2 * num)
    assert 0.5 * expected < whitened < 1.5 * expected, (whitened, expected)
    # gaussian_w2 is the same computation on the raw spectra.
    np.testing.assert_allclose(metrics.gaussian_w2(x, c, grid),
                               metrics.gaussian_w2_spectra(c_hat, c), rtol=1e-6)
    # The empirical spectrum is unbiased for c (5 standard errors, real mode: sqrt(2/num)).
    np.testing.assert_allclose(c_hat, c, rtol=5 * np.sqrt(2 / num))


def test_radial_power_spectrum_of_a_gaussian(key):
    grid = fs.Grid((16, 16))
    cov = Matern(2.0, 3.0)
    x = cov.sample(key, grid, (4000,))
    freqs, power = metrics.radial_power_spectrum(x, grid)
    c = np.asarray(cov.eigenvalues(grid))
    shell = np.rint(np.sqrt(np.asarray(grid.frequencies_squared()))).astype(int)
    exact = np.array([c[shell == r].mean() for r in range(shell.max() + 1)])
    np.testing.assert_allclose(freqs, np.arange(len(exact)))
    np.testing.assert_allclose(power, exact, rtol=5 * np.sqrt(2 / 4000))
    assert float(metrics.spectrum_relative_error(x, x, grid)) == 0.0
    assert float(metrics.spectrum_relative_error(2 * x, x, grid)) == pytest.approx(3.0, rel=1e-5)


def test_pixel_histogram_distance():
    x = jnp.linspace(0, 1, 1000)
    assert float(metrics.pixel_histogram_distance(x, x)) == 0.0
    assert float(metrics.pixel_histogram_distance(x * 0.4, 0.6 + 0.4 * x, bins=10)) == 1.0
    half = float(metrics.pixel_histogram_distance(x, x[:500], bins=10, value_range=(0.0, 1.0)))
    assert half == pytest.approx(0.5, abs=1e-6)


def test_frechet_distance_exact_affine_case(key):
    f = jax.random.normal(key, (500, 6)) @ jax.random.normal(jax.random.key(1), (6, 6))
    g = 2.0 * f + 3.0
    # Sigma_g = 4 Sigma_f, mu_g = 2 mu_f + 3: d^2 = |mu_f - mu_g|^2 + tr Sigma_f.
    f64 = np.asarray(f, np.float64)
    mu = f64.mean(0)
    expected = np.sum((mu - (2 * mu + 3)) ** 2) + np.trace(np.cov(f64, rowvar=False))
    np.testing.assert_allclose(metrics.frechet_distance(f, g), expected, rtol=1e-4)
    assert metrics.frechet_distance(f, f) == pytest.approx(0.0, abs=1e-6 * expected)
    with pytest.raises(ValueError, match="features_x"):
        metrics.frechet_distance(f[:, :3], g)


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_shipped_classifier_card_and_weights(dataset):
    from numpyro_fsdiff._classifier import _WEIGHTS

    folder = _WEIGHTS / f"classifier-{dataset}"
    card = (folder / "MODEL_CARD.md").read_text()
    assert "Test accuracy" in card
    assert (folder / "classifier.eqx").stat().st_size < 2_000_000
    assert json.loads((folder / "config.json").read_text())["features"] > 0
    model = fs.load_classifier(dataset)
    assert model.embed(jnp.zeros((28, 28))).shape == (model.features,)


def test_mnist_classifier_accuracy_and_frechet_on_shipped_subset():
    """On the 2,000 MNIST test images shipped with the package: high accuracy, and the Fréchet
    distance is 0 against itself, also after refining the images to 56 x 56 (spectral
    resampling back to 28 x 28 is exact), and large against a digit-free set."""
    from numpyro_fsdiff._classifier import _WEIGHTS
    from numpyro_fsdiff.data import load_subset

    images, labels = load_subset()
    model = fs.load_classifier("mnist")
    card = json.loads((_WEIGHTS / "classifier-mnist" / "config.json").read_text())
    # The shipped images are 2,000 of the 10,000 test images: the accuracy on them is within
    # 5 standard errors (sqrt(p (1 - p) / 2000) ~ 0.5 points) of the card's.
    p = card["test_accuracy"]
    accuracy = fs.classifier_accuracy(model, images, labels)
    assert abs(accuracy - p) < 5 * np.sqrt(p * (1 - p) / len(labels)) and accuracy > 0.9
    a, b = images[:1000], images[1000:]
    fine = fs.resample(jnp.asarray(a), (56, 56))
    same = metrics.frechet_classifier_distance(fine, a)
    between = metrics.frechet_classifier_distance(a, b)
    noise = metrics.frechet_classifier_distance(
        jax.random.uniform(jax.random.key(0), (1000, 28, 28)), b
    )
    assert same < 1e-3 * between
    assert noise > 20 * between
