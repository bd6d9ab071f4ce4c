"""Moved to `numpyro_fsdiff.metrics` (metrics/_image.py); kept so old imports still work."""

from ..metrics._image import coverage as coverage
from ..metrics._image import credible_interval as credible_interval
from ..metrics._image import psnr as psnr
from ..metrics._image import ssim as ssim
