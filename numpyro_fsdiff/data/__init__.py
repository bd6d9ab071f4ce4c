"""Datasets: MNIST and Fashion-MNIST from their canonical IDX files, and synthetic fields."""

from ._idx import DATASETS as DATASETS
from ._idx import MIRRORS as MIRRORS
from ._idx import SPLITS as SPLITS
from ._idx import dataset_files as dataset_files
from ._idx import download as download
from ._idx import parse_idx as parse_idx
from ._idx import read_idx as read_idx
from ._idx import search_roots as search_roots
from ._load import Dataset as Dataset
from ._load import load as load
from ._load import load_subset as load_subset
from ._scaling import PixelScaling as PixelScaling
from ._synthetic import GaussianMixture as GaussianMixture
from ._synthetic import GaussianMixtureScore as GaussianMixtureScore
from ._synthetic import gaussian_fields as gaussian_fields

__all__ = [
    "DATASETS",
    "MIRRORS",
    "SPLITS",
    "Dataset",
    "GaussianMixture",
    "GaussianMixtureScore",
    "PixelScaling",
    "dataset_files",
    "download",
    "gaussian_fields",
    "load",
    "load_subset",
    "parse_idx",
    "read_idx",
    "search_roots",
]
