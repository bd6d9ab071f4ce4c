"""Function-space score-based diffusion models as NumPyro priors."""

import importlib.metadata

from . import covariance as covariance
from . import data as data
from . import inverse as inverse
from . import metrics as metrics
from . import nn as nn
from ._analytic import GaussianScore as GaussianScore
from ._checkpoint import Checkpoint as Checkpoint
from ._checkpoint import CheckpointError as CheckpointError
from ._checkpoint import load_checkpoint as load_checkpoint
from ._classifier import Classifier as Classifier
from ._classifier import classifier_accuracy as classifier_accuracy
from ._classifier import load_classifier as load_classifier
from ._corrector import LangevinTerm as LangevinTerm
from ._corrector import PredictorCorrector as PredictorCorrector
from ._exponential import DDIM as DDIM
from ._exponential import DataPredictionTerm as DataPredictionTerm
from ._exponential import DPMSolverPP as DPMSolverPP
from ._exponential import DPMSolverPPSDE as DPMSolverPPSDE
from ._flow import ProbabilityFlow as ProbabilityFlow
from ._gaussian_field import GaussianField as GaussianField
from ._grid import Grid as Grid
from ._grid import band_grid_shape as band_grid_shape
from ._grid import band_limit as band_limit
from ._grid import band_mask as band_mask
from ._grid import fourier_multiply as fourier_multiply
from ._grid import resample as resample
from ._likelihood import AbstractDivergence as AbstractDivergence
from ._likelihood import ExactDivergence as ExactDivergence
from ._likelihood import FlowSolution as FlowSolution
from ._likelihood import HutchinsonDivergence as HutchinsonDivergence
from ._likelihood import ProbabilityFlowODE as ProbabilityFlowODE
from ._loss import NoisePredictionScore as NoisePredictionScore
from ._loss import TimeWindow as TimeWindow
from ._loss import band_limited_noise as band_limited_noise
from ._loss import dsm_loss as dsm_loss
from ._pretrained import pretrained as pretrained
from ._prior import DiffusionPrior as DiffusionPrior
from ._sample import SampleInfo as SampleInfo
from ._sample import sample as sample
from ._sample import sample_one as sample_one
from ._sample import tweedie_denoise as tweedie_denoise
from ._sde import VPSDE as VPSDE
from ._sharding import data_mesh as data_mesh
from ._sharding import global_batch as global_batch
from ._sharding import map_blocks as map_blocks
from ._sharding import process_slice as process_slice
from ._sharding import replicate as replicate
from ._sharding import shard_leading_axis as shard_leading_axis
from ._solvers import LogSNRClock as LogSNRClock
from ._solvers import SolvePlan as SolvePlan
from ._solvers import SolverConfig as SolverConfig
from ._solvers import time_grid as time_grid
from ._spectrum import compare_spectra as compare_spectra
from ._spectrum import covariance_power_spectrum as covariance_power_spectrum
from ._spectrum import plot_power_spectra as plot_power_spectra
from ._spectrum import radial_power_spectrum as radial_power_spectrum
from ._terms import ColouredNoiseTerm as ColouredNoiseTerm
from ._terms import SteppedBrownianPath as SteppedBrownianPath
from ._terms import brownian_motion as brownian_motion
from ._training import BatchSchedule as BatchSchedule
from ._training import Callback as Callback
from ._training import TrainConfig as TrainConfig
from ._training import TrainingDivergedError as TrainingDivergedError
from ._training import TrainingInterrupted as TrainingInterrupted
from ._training import TrainLog as TrainLog
from ._training import TrainResult as TrainResult
from ._training import TrainState as TrainState
from ._training import heldout_loss as heldout_loss
from ._training import key_to_seed as key_to_seed
from ._training import level_order as level_order
from ._training import train as train
from ._training import train_step as train_step

try:
    __version__ = importlib.metadata.version("numpyro_fsdiff")
except importlib.metadata.PackageNotFoundError:  # a source checkout on PYTHONPATH, not installed
    __version__ = "0+unknown"

# Application names that lived here before the command line became its own package
# (`numpyro_fsdiff.cli`); they still resolve, with a warning, for one release.
_MOVED_TO_CLI = {
    "reuse_freed_memory": "numpyro_fsdiff.cli",
    "compare_solvers": "numpyro_fsdiff.cli",
    "train_classifier": "numpyro_fsdiff.cli",
}
# Solver registries that `SolverConfig` replaced; deprecated for one release.
_DEPRECATED_SOLVER_NAMES = {
    "DEFAULT_STEPS": "SolverConfig's defaults",
    "ODE_SOLVER_NAMES": "SolverConfig",
    "SDE_SOLVER_NAMES": "SolverConfig",
    "resolve_solver": "SolverConfig(...).resolve_solver(kind)",
}


def __getattr__(name: str):
    import warnings

    if name in _MOVED_TO_CLI:
        where = _MOVED_TO_CLI[name]
        warnings.warn(
            f"`numpyro_fsdiff.{name}` moved to `{where}.{name}` (the application package); "
            "the old name will be removed in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(where), name)
    if name in _DEPRECATED_SOLVER_NAMES:
        from . import _solvers

        warnings.warn(
            f"`numpyro_fsdiff.{name}` is deprecated (use {_DEPRECATED_SOLVER_NAMES[name]}); "
            "the old name will be removed in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(_solvers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
