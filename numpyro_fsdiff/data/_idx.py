"""Reading, verifying and downloading the canonical gzip IDX files of MNIST and Fashion-MNIST.

The IDX format (LeCun et al.) is a big-endian header, the magic bytes `0x00 0x00 <dtype> <ndim>`,
`ndim` big-endian `uint32` sizes, then the raw array. Every file is checked against the MD5 of
its uncompressed bytes before it is parsed, so a truncated, corrupt or substituted file raises a
`ValueError` instead of returning a garbage array.
"""

import gzip
import hashlib
import os
import urllib.request
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .._io import write_bytes

_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class DatasetFiles(NamedTuple):
    """File names and MD5 sums (of the uncompressed bytes) of one split of a dataset."""

    images: str
    labels: str
    images_md5: str
    labels_md5: str


_SPLITS = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

_MD5 = {
    "mnist": {
        "train": ("6bbc9ace898e44ae57da46a324031adb", "a25bea736e30d166cdddb491f175f624"),
        "test": ("2646ac647ad5339dbf082846283269ea", "27ae3e4e09519cfbb04c329615203637"),
    },
    "fashion-mnist": {
        "train": ("f4a8712d7a061bf5bd6d2ca38dc4d50a", "9018921c3c673c538a1fc5bad174d6f9"),
        "test": ("8181f5470baa50b63fa0f6fddb340f0a", "15d484375f8d13e6eb1aabb0c3f46965"),
    },
}

MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
}
"""Canonical download locations, tried in order."""

DATASETS = tuple(_MD5)
SPLITS = tuple(_SPLITS)


def dataset_files(name: str, split: str) -> DatasetFiles:
    """The canonical file names and uncompressed MD5 sums of `name` / `split`."""
    if name not in _MD5:
        raise ValueError(f"`name` must be one of {DATASETS}; got {name!r}.")
    if split not in _SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}; got {split!r}.")
    return DatasetFiles(*_SPLITS[split], *_MD5[name][split])


def _decompress(path: Path, data: bytes) -> bytes:
    try:
        return gzip.decompress(data)
    except EOFError:
        raise ValueError(
            f"{path} is truncated (the gzip stream ends early); delete it and fetch it again "
            "with `fsdiff data fetch`."
        ) from None
    except (gzip.BadGzipFile, zlib.error, OSError) as err:
        raise ValueError(
            f"{path} is not a valid gzip file ({err}); delete it and fetch it again with "
            "`fsdiff data fetch`."
        ) from None


def parse_idx(raw: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse uncompressed IDX bytes into a NumPy array (native byte order).

    **Raises:** `ValueError` if the magic number, the dtype code or the size is wrong.
    """
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{source} is not an IDX file: bad magic number {raw[:4]!r}.")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{source} has an unknown IDX dtype code {code:#04x}.")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{source} ends inside its IDX header.")
    shape = tuple(int(n) for n in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{source} holds {len(raw) - header} data bytes but its header {shape} needs "
            f"{expected}; the file is truncated or corrupt."
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike, md5: str | None = None) -> np.ndarray:
    """Read a gzip-compressed IDX file, checking the MD5 of its uncompressed bytes if given.

    **Arguments:**

    - `path`: the `.gz` file.
    - `md5`: the expected hex MD5 of the uncompressed bytes, or `None` to skip the check.

    **Returns:** the array, e.g. `uint8` of shape `(num, 28, 28)` for images.

    **Raises:** `ValueError` for a truncated or corrupt gzip stream, a checksum mismatch or a
    malformed IDX header; `FileNotFoundError` if `path` does not exist.
    """
    path = Path(path)
    raw = _decompress(path, path.read_bytes())
    if md5 is not None:
        digest = hashlib.md5(raw).hexdigest()
        if digest != md5:
            raise ValueError(
                f"{path} fails its checksum: the MD5 of its uncompressed bytes is {digest}, "
                f"expected {md5}. The file is corrupt or not the canonical one; delete it and "
                "fetch it again with `fsdiff data fetch`."
            )
    return parse_idx(raw, str(path))


def search_roots(name: str, root: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for the files of `name`, in order.

    `root`, then `$FSDIFF_DATA`, then `~/.cache/numpyro_fsdiff`, then `/usr/share/datasets`;
    each is tried both as the folder holding the files and as the parent of a `name/` folder.
    """
    bases = []
    if root is not None:
        bases.append(Path(root).expanduser())
    if os.environ.get("FSDIFF_DATA"):
        bases.append(Path(os.environ["FSDIFF_DATA"]).expanduser())
    bases.append(cache_dir())
    bases.append(Path("/usr/share/datasets"))
    roots = []
    for base in bases:
        roots.extend([base / name, base])
    return roots


def cache_dir() -> Path:
    """`~/.cache/numpyro_fsdiff`, where downloads go by default."""
    return Path("~/.cache/numpyro_fsdiff").expanduser()


def find_files(name: str, split: str, root=None) -> tuple[Path, Path] | None:
    """The first folder of [`search_roots`][] holding both files of the split, or `None`."""
    files = dataset_files(name, split)
    for folder in search_roots(name, root):
        images, labels = folder / files.images, folder / files.labels
        if images.is_file() and labels.is_file():
            return images, labels
    return None


def download(
    name: str,
    split: str | None = None,
    root: str | os.PathLike | None = None,
    *,
    mirrors: tuple[str, ...] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download the files of `name` (one `split`, or both) into `root/name` and verify them.

    Each file is fetched from the first mirror that answers, checked against its MD5 and
    written atomically, so an interrupted download never leaves a partial file behind.
    Files already present and valid are kept.

    **Arguments:**

    - `name`: `"mnist"` or `"fashion-mnist"`.
    - `split`: `"train"`, `"test"` or `None` for both.
    - `root`: the parent folder; `~/.cache/numpyro_fsdiff` by default.
    - `mirrors`: base URLs to try (default: the canonical mirrors of `name`).

    **Returns:** the folder holding the files.
    """
    splits = SPLITS if split is None else (split,)
    folder = (Path(root).expanduser() if root is not None else cache_dir()) / name
    mirrors = MIRRORS.get(name, ()) if mirrors is None else tuple(mirrors)
    for s in splits:
        files = dataset_files(name, s)
        for filename, md5 in ((files.images, files.images_md5), (files.labels, files.labels_md5)):
            target = folder / filename
            if target.is_file():
                try:
                    read_idx(target, md5)
                    continue
                except ValueError:
                    pass
            errors = []
            for base in mirrors:
                url = base + filename
                try:
                    with urllib.request.urlopen(url, timeout=timeout) as response:
                        data = response.read()
                    raw = _decompress(Path(url), data)
                    digest = hashlib.md5(raw).hexdigest()
                    if digest != md5:
                        raise ValueError(f"MD5 {digest} != expected {md5}")
                except (OSError, ValueError) as err:
                    errors.append(f"{url}: {err}")
                    continue
                write_bytes(target, data)
                break
            else:
                raise OSError(
                    f"could not download {filename} of {name!r}; tried:\n  " + "\n  ".join(errors)
                )
    return folder
