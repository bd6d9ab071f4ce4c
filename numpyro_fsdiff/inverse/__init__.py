"""Imaging inverse problems: observation operators, NumPyro models and posterior samplers."""

from ._operators import AbstractOperator as AbstractOperator
from ._operators import CellAverage as CellAverage
from ._operators import Compose as Compose
from ._operators import GaussianBlur as GaussianBlur
from ._operators import Mask as Mask
from ._operators import MotionBlur as MotionBlur
from ._operators import PointObservations as PointObservations
from ._operators import naive_inverse as naive_inverse
