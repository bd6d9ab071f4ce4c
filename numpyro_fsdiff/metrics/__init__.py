"""Sample-quality metrics: energy distance, Vendi score, spectra, histograms, W2, Frechet."""

from ._gaussian import empirical_spectrum as empirical_spectrum
from ._gaussian import gaussian_w2 as gaussian_w2
from ._gaussian import gaussian_w2_spectra as gaussian_w2_spectra
