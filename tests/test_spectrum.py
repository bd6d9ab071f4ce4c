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


def test_compare_spectra_tells_a_measure_on_functions_from_a_band_limited_copy():
    """N(0, Q) drawn independently on 12 x 12 and 32 x 32 is one law: both kinds of shell
    match within sampling error. Refining the 12 x 12 draws spectrally instead leaves the new
    shells empty: their ratio to Q is 0 and far outside the errors."""
    q = Matern(2.0, 3.0, 5.0)
    coarse = q.sample(jax.random.key(0), fs.Grid((12, 12)), (300,))
    fine = q.sample(jax.random.key(1), fs.Grid((32, 32)), (300,))
    row = fs.compare_spectra({12: coarse, 32: fine}, q, cutoff=3)["32"]
    assert abs(row["shared_ratio_median"] - 1) < 0.1 and row["shared_abs_z_median"] < 2
    assert abs(row["new_ratio_median"] - 1) < 0.1 and row["new_abs_z_median"] < 2
    lo, hi = row["new_ratio_range"]
    assert 0.7 < lo <= hi < 1.3
    band = fs.band_limit(coarse, 3)
    copy = fs.compare_spectra({12: band, 32: fs.resample(band, (32, 32))}, q, cutoff=3)
    assert copy["32"]["new_ratio_median"] < 1e-6 and copy["32"]["high_std"] < 1e-3
    assert copy["32"]["shared_abs_z_max"] < 1e-3  # the same functions on the shared shells


def test_compare_spectra_reference_factor_scales_the_new_shells_only():
    """Fine draws from N(0, 1.2 Q): against Q their new shells read 1.2, many standard errors
    off; against 1.2 Q they read 1 within sampling error. The shared shells do not move."""
    q = Matern(2.0, 3.0, 5.0)
    coarse = q.sample(jax.random.key(0), fs.Grid((12, 12)), (300,))
    fine = np.sqrt(1.2) * q.sample(jax.random.key(1), fs.Grid((32, 32)), (300,))
    plain = fs.compare_spectra({12: coarse, 32: fine}, q, cutoff=3)["32"]
    scaled = fs.compare_spectra({12: coarse, 32: fine}, q, cutoff=3, reference_factor=1.2)["32"]
    assert abs(plain["new_ratio_median"] - 1.2) < 0.1 and plain["new_abs_z_median"] > 2
    assert abs(scaled["new_ratio_median"] - 1) < 0.1 and scaled["new_abs_z_median"] < 2
    assert scaled["shared_ratio_median"] == plain["shared_ratio_median"]


def test_compare_spectra_rejects_bad_input():
    xs = np.zeros((2, 8, 8))
    # The message names the grid sizes, not thousands of field values.
    with pytest.raises(ValueError, match=r"at least two grid sizes to fields; got \[8\]\.$"):
        fs.compare_spectra({8: xs}, Matern(2.0, 3.0), cutoff=2)
    with pytest.raises(ValueError, match="`cutoff` must be an int in"):
        fs.compare_spectra({8: xs, 16: np.zeros((2, 16, 16))}, Matern(2.0, 3.0), cutoff=4)
    for factor in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="`reference_factor` must be a positive number"):
            fs.compare_spectra({8: xs, 16: np.zeros((2, 16, 16))}, Matern(2.0, 3.0), cutoff=2,
                               reference_factor=factor)
