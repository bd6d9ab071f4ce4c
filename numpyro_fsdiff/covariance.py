"""Trace-class covariance operators, diagonal in the Fourier basis."""

from ._covariance import AbstractCovariance as AbstractCovariance
from ._covariance import BandSplit as BandSplit
from ._covariance import Combined as Combined
from ._covariance import LaplacianPower as LaplacianPower
from ._covariance import Matern as Matern
from ._covariance import WhiteNoise as WhiteNoise

__all__ = ["AbstractCovariance", "BandSplit", "Combined", "LaplacianPower", "Matern", "WhiteNoise"]
