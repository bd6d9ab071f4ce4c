import jax
import numpy as np
import pytest

import numpyro_fsdiff as fs
from numpyro_fsdiff.covariance import Matern


def test_radial_spectrum_of_gaussian_samples_is_that_of_q():
    q = Matern(2.0, 3.0, 5.0)
    grid = fs.Grid((16, 16))
    xs = q.sample(jax.random.key(0), grid, (400,))
    radii, power, stderr = fs.radial_power_spectrum(xs)
    q_radii, q_power = fs.covariance_power_spectrum(q, grid.shape)
    np.testing.assert_array_equal(radii, q_radii)
    inner = (radii >= 1) & (radii <= 7)  # shells without the folded Nyquist modes
    assert np.all(np.abs(power[inner] - q_power[inner]) < 5 * stderr[inner])
    # Refining spectrally leaves the function's coefficients, hence the shared shells, exact.
    _, fine, _ = fs.radial_power_spectrum(fs.resample(xs, (32, 32)))
    np.testing.assert_allclose(fine[: len(power)][inner], power[inner], rtol=1e-4)


def test_radial_spectrum_rejects_one_field():
    with pytest.raises(ValueError, match="`xs` must hold at least 2"):
        fs.radial_power_spectrum(np.zeros((1, 8, 8)))
