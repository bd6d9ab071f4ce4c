"""Sample-quality metrics: energy distance, Vendi score, spectra, histograms, W2, Fréchet;
image metrics of posterior summaries: PSNR, SSIM, credible intervals and coverage."""

from ._distances import energy_distance as energy_distance
from ._distances import pixel_histogram_distance as pixel_histogram_distance
from ._distances import vendi_score as vendi_score
from ._frechet import frechet_classifier_distance as frechet_classifier_distance
from ._frechet import frechet_distance as frechet_distance
from ._gaussian import empirical_spectrum as empirical_spectrum
from ._gaussian import gaussian_w2 as gaussian_w2
from ._gaussian import gaussian_w2_spectra as gaussian_w2_spectra
from ._image import coverage as coverage
from ._image import credible_interval as credible_interval
from ._image import psnr as psnr
from ._image import ssim as ssim
from ._image import weighted_quantile as weighted_quantile
from ._spectrum import radial_power_spectrum as radial_power_spectrum
from ._spectrum import spectrum_relative_error as spectrum_relative_error
