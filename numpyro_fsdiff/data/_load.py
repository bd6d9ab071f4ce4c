"""`load`: MNIST and Fashion-MNIST as pixel intensities in [0, 1]; the shipped MNIST subset."""

import importlib.resources
import os
from typing import NamedTuple

import numpy as np

from .._sharding import process_slice as _process_slice
from ._idx import DATASETS, dataset_files, find_files, read_idx, search_roots
from ._idx import download as fetch


class Dataset(NamedTuple):
    """Images and labels of one split.

    - `images`: `float32` pixel intensities in $[0, 1]$ (byte value / 255), shape
      `(num, 28, 28)`; axis 1 is the image row (the first grid axis), axis 2 the column.
    - `labels`: `int32` class labels in `0..9`, shape `(num,)`.
    """

    images: np.ndarray
    labels: np.ndarray


def _as_dataset(images: np.ndarray, labels: np.ndarray, source: str) -> Dataset:
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{source}: images of shape {images.shape} and labels of shape {labels.shape} do "
            "not form a dataset."
        )
    return Dataset(images.astype(np.float32) / 255.0, labels.astype(np.int32))


def _take_part(images: np.ndarray, labels: np.ndarray, part) -> tuple[np.ndarray, np.ndarray]:
    """The examples of `part`: `False` all, `True` this process's, or a `slice`."""
    if part is False:
        return images, labels
    if part is True:
        part = _process_slice(images.shape[0])
    if not isinstance(part, slice):
        raise ValueError(
            f"`process_slice` must be False, True or a slice of the examples; got {part!r}."
        )
    return images[part], labels[part]


def load(
    name: str,
    split: str = "train",
    root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    process_slice: bool | slice = False,
) -> Dataset:
    r"""Load MNIST or Fashion-MNIST from the canonical gzip IDX files.

    The files (`train-images-idx3-ubyte.gz`, ..., `t10k-labels-idx1-ubyte.gz`) are looked for
    in `root`, then `$FSDIFF_DATA`, then `~/.cache/numpyro_fsdiff`, then `/usr/share/datasets`
    (where Debian's `dataset-fashion-mnist` installs them); each location may hold the files
    itself or a `name/` folder with them. Every file is checked against the MD5 sum of its
    uncompressed bytes.

    **Value scaling:** images are returned as `float32` pixel intensities $u \in [0, 1]$
    (byte / 255). Training maps them to model space with
    [`PixelScaling`][numpyro_fsdiff.data.PixelScaling] ($x = 2u - 1 \in [-1, 1]$ by default).

    **Arguments:**

    - `name`: `"mnist"` or `"fashion-mnist"`.
    - `split`: `"train"` (60,000 images) or `"test"` (10,000 images).
    - `root`: a folder to look in first.
    - `download`: if the files are not found, fetch them from the canonical mirrors into
      `root/name` (or `~/.cache/numpyro_fsdiff/name`), verifying their checksums.
    - `process_slice`: `True` keeps only this process's contiguous part of the split on a
      multi-host run ([`process_slice`][numpyro_fsdiff.process_slice]; everything with one
      process), for [`train`][numpyro_fsdiff.train] with a `mesh`; a `slice` keeps those
      examples.

    **Returns:** a [`Dataset`][numpyro_fsdiff.data.Dataset] `(images, labels)`.

    **Raises:** `FileNotFoundError` saying how to get the files if they are missing;
    `ValueError` if a file is truncated, corrupt or fails its checksum.

    !!! example

        ```python
        import numpyro_fsdiff

        try:
            images, labels = numpyro_fsdiff.data.load("mnist", split="test")  # (10000, 28, 28)
        except FileNotFoundError:  # no IDX files here: the 2,000 test images that ship
            images, labels = numpyro_fsdiff.data.load_subset()
        x = numpyro_fsdiff.data.PixelScaling().from_pixels(jnp.asarray(images[:8]))  # 2u - 1
        ```
    """
    files = dataset_files(name, split)
    found = find_files(name, split, root)
    if found is None and download:
        fetch(name, split, root)
        found = find_files(name, split, root)
    if found is None:
        looked = "\n  ".join(str(p) for p in search_roots(name, root))
        raise FileNotFoundError(
            f"the {name!r} {split!r} files ({files.images}, {files.labels}) were not found. "
            f"Looked in:\n  {looked}\nGet them with `fsdiff data fetch --dataset {name}` or "
            f"`numpyro_fsdiff.data.load({name!r}, download=True)`, or set $FSDIFF_DATA to a "
            "folder that holds them. For offline work, `numpyro_fsdiff.data.load_subset()` "
            "returns the 2,000 MNIST test images shipped with the package."
        )
    images_path, labels_path = found
    images = read_idx(images_path, files.images_md5)
    labels = read_idx(labels_path, files.labels_md5)
    images, labels = _take_part(images, labels, process_slice)
    return _as_dataset(images, labels, str(images_path.parent))


def load_subset(*, process_slice: bool | slice = False) -> Dataset:
    """The first 2,000 images of the MNIST test split, shipped with the package.

    For offline examples and tests. MNIST is by Y. LeCun, C. Cortes and C. J. C. Burges and
    is licensed CC BY-SA 3.0; see `numpyro_fsdiff/data/_subset/README.md`.

    **Arguments:**

    - `process_slice`: as for [`load`][numpyro_fsdiff.data.load].

    **Returns:** a [`Dataset`][numpyro_fsdiff.data.Dataset] with the same scaling as
    [`load`][numpyro_fsdiff.data.load].
    """
    resource = importlib.resources.files("numpyro_fsdiff.data") / "_subset" / "mnist_test_2000.npz"
    with importlib.resources.as_file(resource) as path, np.load(path) as archive:
        images, labels = _take_part(archive["images"], archive["labels"], process_slice)
        return _as_dataset(images, labels, str(path))


__all__ = ["DATASETS", "Dataset", "load", "load_subset"]
