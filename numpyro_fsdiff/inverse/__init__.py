"""Imaging inverse problems: observation operators, NumPyro models and posterior samplers."""

from ..metrics._image import coverage as coverage
from ..metrics._image import credible_interval as credible_interval
from ..metrics._image import psnr as psnr
from ..metrics._image import ssim as ssim
from ._dps import DPS as DPS
from ._dps import guided_score as guided_score
from ._gaussian import gaussian_posterior as gaussian_posterior
from ._latent import ColourTransform as ColourTransform
from ._latent import whiten as whiten
from ._model import model as model
from ._noise import GaussianNoise as GaussianNoise
from ._nuts import NUTS as NUTS
from ._operators import AbstractOperator as AbstractOperator
from ._operators import CellAverage as CellAverage
from ._operators import Compose as Compose
from ._operators import GaussianBlur as GaussianBlur
from ._operators import Mask as Mask
from ._operators import MotionBlur as MotionBlur
from ._operators import PointObservations as PointObservations
from ._operators import naive_inverse as naive_inverse
from ._particle_gibbs import ParticleGibbs as ParticleGibbs
from ._particle_gibbs import ParticleGibbsResult as ParticleGibbsResult
from ._posterior import AbstractSampler as AbstractSampler
from ._posterior import Posterior as Posterior
from ._posterior import SamplerOutput as SamplerOutput
from ._posterior import posterior as posterior
from ._problem import Problem as Problem
from ._smc import SMC as SMC
from ._smc import GaussianLikelihood as GaussianLikelihood
from ._smc import SMCResult as SMCResult
from ._svi import MAP as MAP
from ._svi import SVI as SVI

# The MNIST tasks moved to the application package (`numpyro_fsdiff.cli`); the old names
# still resolve, with a warning, for one release.
_MOVED_TO_CLI = ("SAMPLERS", "TASKS", "run_task", "task_operator")


def __getattr__(name: str):
    if name in _MOVED_TO_CLI:
        import importlib
        import warnings

        warnings.warn(
            f"`numpyro_fsdiff.inverse.{name}` moved to `numpyro_fsdiff.cli.{name}` (the "
            "application package); the old name will be removed in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module("numpyro_fsdiff.cli"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
