import gzip
import hashlib
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_fsdiff import VPSDE, GaussianScore, Grid, resample
from numpyro_fsdiff.covariance import Matern
from numpyro_fsdiff.data import (
    GaussianMixture,
    PixelScaling,
    dataset_files,
    download,
    gaussian_fields,
    load,
    load_subset,
    parse_idx,
    read_idx,
)

SHARED = Path(os.environ.get("FSDIFF_DATA", "/work/shared/data"))
HAVE_MNIST = (SHARED / "mnist" / "t10k-images-idx3-ubyte.gz").is_file()


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No data anywhere the loader looks except what the test writes."""
    monkeypatch.setenv("FSDIFF_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr("numpyro_fsdiff.data._idx.Path.home", lambda: tmp_path / "home")
    return tmp_path


def test_parse_idx_round_trip_and_header_errors():
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = idx_bytes(array)
    np.testing.assert_array_equal(parse_idx(raw), array)
    with pytest.raises(ValueError, match="bad magic"):
        parse_idx(b"\x01" + raw[1:])
    with pytest.raises(ValueError, match="dtype code"):
        parse_idx(raw[:2] + b"\x07" + raw[3:])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        parse_idx(raw[:-1])


@pytest.mark.skipif(not HAVE_MNIST, reason="needs the MNIST files of $FSDIFF_DATA")
def test_load_mnist_test_split_and_subset(monkeypatch):
    monkeypatch.setenv("FSDIFF_DATA", str(SHARED))
    images, labels = load("mnist", split="test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.float32
    assert images.min() == 0.0 and images.max() == 1.0
    np.testing.assert_array_equal(labels[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
    subset = load_subset()
    np.testing.assert_array_equal(subset.images, images[:2000])
    np.testing.assert_array_equal(subset.labels, labels[:2000])
    # `root` may be the folder itself or its parent.
    again = load("mnist", "test", root=SHARED / "mnist")
    np.testing.assert_array_equal(again.labels, labels)


def test_missing_files_say_how_to_get_them(isolated):
    with pytest.raises(FileNotFoundError, match="fsdiff data fetch --dataset fashion-mnist"):
        load("fashion-mnist", "test", root=isolated / "nowhere")
    with pytest.raises(ValueError, match="`split`"):
        load("mnist", "validation")
    with pytest.raises(ValueError, match="`name`"):
        load("cifar10")


def write_fake_split(folder: Path, name="mnist", split="test", images=None, labels=None):
    files = dataset_files(name, split)
    folder.mkdir(parents=True, exist_ok=True)
    images = np.zeros((3, 28, 28), np.uint8) if images is None else images
    labels = np.arange(3, dtype=np.uint8) if labels is None else labels
    (folder / files.images).write_bytes(gzip.compress(idx_bytes(images)))
    (folder / files.labels).write_bytes(gzip.compress(idx_bytes(labels)))
    return folder / files.images, folder / files.labels


def test_wrong_checksum_is_an_error(isolated):
    images, _ = write_fake_split(isolated / "mnist")
    with pytest.raises(ValueError, match="fails its checksum"):
        load("mnist", "test", root=isolated)
    # Without a checksum the same file parses: the error came from the checksum.
    assert read_idx(images).shape == (3, 28, 28)
    digest = hashlib.md5(gzip.decompress(images.read_bytes())).hexdigest()
    assert read_idx(images, md5=digest).shape == (3, 28, 28)


def test_truncated_and_corrupt_gzip_are_errors(isolated):
    images, _ = write_fake_split(isolated / "mnist")
    data = images.read_bytes()
    images.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(images)
    images.write_bytes(b"this is not gzip data at all")
    with pytest.raises(ValueError, match="not a valid gzip"):
        load("mnist", "test", root=isolated)


@pytest.mark.skipif(not HAVE_MNIST, reason="needs the MNIST files of $FSDIFF_DATA")
def test_download_verifies_and_writes(isolated):
    mirror = (SHARED / "mnist").as_uri() + "/"
    folder = download("mnist", "test", root=isolated / "cache", mirrors=(mirror,))
    assert folder == isolated / "cache" / "mnist"
    assert load("mnist", "test", root=isolated / "cache").images.shape == (10000, 28, 28)
    # A mirror serving the wrong bytes is refused and nothing is written.
    bad = isolated / "bad"
    write_fake_split(bad)
    with pytest.raises(OSError, match="MD5"):
        download("mnist", "test", root=isolated / "other", mirrors=(bad.as_uri() + "/",))
    assert not (isolated / "other" / "mnist" / dataset_files("mnist", "test").images).exists()


def test_pixel_scaling_round_trip():
    scaling = PixelScaling()
    u = jnp.linspace(0.0, 1.0, 12).reshape(3, 4)
    x = scaling.from_pixels(u)
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    np.testing.assert_allclose(scaling.to_pixels(x), u, atol=1e-7)
    assert float(scaling.to_pixels(jnp.asarray(3.0))) == 1.0
    with pytest.raises(ValueError, match="`scale`"):
        PixelScaling(scale=0.0)


def test_gaussian_fields_variance(key):
    q = Matern(2.0, 3.0, 3.0)
    grid = Grid((8, 8))
    num = 4000
    u = gaussian_fields(key, q, grid, num)
    expected = float(q.trace(grid) / grid.area)
    # The sample second moment of N(0, v) over `num` fields (each 64 correlated pixels)
    # has relative standard error at most sqrt(2 / num).
    assert abs(float(jnp.mean(u**2)) / expected - 1) < 5 * np.sqrt(2 / num)
    with pytest.raises(ValueError, match="`num`"):
        gaussian_fields(key, q, grid, 0)


def test_mixture_score_is_q_times_autodiff_gradient(x64, key):
    mixture = GaussianMixture.toy()
    sde = VPSDE(Matern(1.5, 5.0, 2.0))  # Q differs from C: the general formula is exercised
    grid = Grid((6, 7))
    score = mixture.score(sde, grid)
    x, _ = mixture.sample(key, grid, 3)
    grad = jax.jit(jax.vmap(jax.grad(score.log_prob), in_axes=(0, None)))
    for t in (0.05, 0.3, 0.9):
        xt, _ = sde.perturb(jax.random.fold_in(key, 1), x, t, grid=grid)
        expected = sde.covariance.apply(grad(xt, t), grid) / grid.cell_area  # Q_pixel @ grad
        np.testing.assert_allclose(
            jax.vmap(score, (0, None))(xt, t), expected, rtol=1e-9, atol=1e-9
        )
        r = jax.vmap(score.responsibilities, (0, None))(xt, t)
        np.testing.assert_allclose(r.sum(-1), 1.0, rtol=1e-12)


def test_mixture_of_one_component_is_gaussian_score(x64, key):
    c = Matern(2.0, 3.0, 3.0)
    grid = Grid((8, 8))
    sde = VPSDE(Matern(1.5, 5.0, 2.0))
    mixture = GaussianMixture(jnp.zeros((1, 4, 4)), c)
    x = c.sample(key, grid)
    np.testing.assert_allclose(
        mixture.score(sde, grid)(x, 0.4), GaussianScore(c, sde, grid)(x, 0.4), rtol=1e-12
    )


def test_mixture_samples_and_resolution_consistency(key):
    mixture = GaussianMixture.toy()
    grid = Grid((16, 16))
    num = 4000
    x, comp = mixture.sample(key, grid, num)
    frac = float(jnp.mean(comp == 0))
    assert abs(frac - 0.5) < 5 * 0.5 / np.sqrt(num)
    mu = mixture.means_on(grid)[0]
    plus = x[comp == 0].mean(0)
    std = float(jnp.sqrt(mixture.covariance.trace(grid) / grid.area))
    assert float(jnp.max(jnp.abs(plus - mu))) < 5 * std / np.sqrt(num / 2)
    # The band-limited mean is the same function on every grid.
    np.testing.assert_allclose(
        resample(mixture.means_on(Grid((32, 32))), (16, 16)), mixture.means_on(grid), atol=1e-6
    )
    with pytest.raises(ValueError, match="`weights`"):
        GaussianMixture(jnp.zeros((2, 4, 4)), mixture.covariance, weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="`means`"):
        GaussianMixture(jnp.zeros((4, 4)), mixture.covariance)
