r"""Small CNN classifiers for MNIST and Fashion-MNIST, whose features define a Fréchet distance.

The shipped weights (`numpyro_fsdiff/weights/classifier-<dataset>/`) were trained by
[`train_classifier`][numpyro_fsdiff.cli.train_classifier] on the 60,000 training images; each folder
has a `MODEL_CARD.md` with the test accuracy. The classifiers read pixel intensities in
$[0, 1]$ on a 28 x 28 grid (what [`numpyro_fsdiff.data.load`][] returns); map model-space
samples to pixels first (e.g. with `PixelScaling().to_pixels`).
"""

import json
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp

from ._custom_types import Array, ArrayLike, Float, Int, PRNGKeyArray

CLASSIFIER_SHAPE = (28, 28)
"""The grid the classifiers read."""
_DATASETS = ("mnist", "fashion-mnist")
_WEIGHTS = Path(__file__).parent / "weights"


class Classifier(eqx.Module):
    r"""A small CNN on one 28 x 28 image of pixel intensities in $[0, 1]$.

    conv 3x3 (1 -> `channels`) - ReLU - 2x2 max-pool - conv 3x3 (`channels` -> 2 `channels`) -
    ReLU - 2x2 max-pool - linear to `features` - ReLU (the feature layer) - linear to 10 logits.

    **Arguments:**

    - `channels`: channels of the first convolution.
    - `features`: width of the feature layer used by the Fréchet distance.
    - `key`: a PRNG key for the initial weights.
    """

    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    hidden: eqx.nn.Linear
    head: eqx.nn.Linear
    channels: int = eqx.field(static=True)
    features: int = eqx.field(static=True)

    def __init__(self, channels: int = 16, features: int = 128, *, key: PRNGKeyArray):
        for name, value in (("channels", channels), ("features", features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an int >= 1; got {value!r}.")
        k1, k2, k3, k4 = jax.random.split(key, 4)
        self.conv1 = eqx.nn.Conv2d(1, channels, 3, padding=1, key=k1)
        self.conv2 = eqx.nn.Conv2d(channels, 2 * channels, 3, padding=1, key=k2)
        self.hidden = eqx.nn.Linear(2 * channels * 7 * 7, features, key=k3)
        self.head = eqx.nn.Linear(features, 10, key=k4)
        self.channels = channels
        self.features = features

    def embed(self, image: Float[Array, "28 28"]) -> Float[Array, " features"]:
        """The feature vector of one image (the input of the last layer)."""
        if tuple(image.shape) != CLASSIFIER_SHAPE:
            raise ValueError(
                f"`image` must have shape {CLASSIFIER_SHAPE}; got {tuple(image.shape)} "
                "(resample to 28 x 28 first)."
            )
        pool = eqx.nn.MaxPool2d(2, 2)
        h = (image - 0.5)[None] / 0.5
        h = pool(jax.nn.relu(self.conv1(h)))
        h = pool(jax.nn.relu(self.conv2(h)))
        return jax.nn.relu(self.hidden(h.reshape(-1)))

    def __call__(self, image: Float[Array, "28 28"]) -> Float[Array, "10"]:
        """The class logits of one image."""
        return self.head(self.embed(image))


def _check_dataset(dataset: str) -> str:
    if dataset not in _DATASETS:
        raise ValueError(f"`dataset` must be one of {_DATASETS}; got {dataset!r}.")
    return dataset


def load_classifier(dataset: str = "mnist", path: str | Path | None = None) -> Classifier:
    """The shipped classifier of `dataset` (`"mnist"` or `"fashion-mnist"`), or the one saved
    in the folder `path` by [`train_classifier`][numpyro_fsdiff.cli.train_classifier].

    **Raises:** `ValueError` for an unknown dataset; `FileNotFoundError` if the weights are
    missing.
    """
    folder = Path(path) if path is not None else _WEIGHTS / f"classifier-{_check_dataset(dataset)}"
    config_file, weights_file = folder / "config.json", folder / "classifier.eqx"
    if not weights_file.exists() or not config_file.exists():
        raise FileNotFoundError(f"no classifier weights in {folder} (config.json, classifier.eqx).")
    config = json.loads(config_file.read_text())
    skeleton = Classifier(config["channels"], config["features"], key=jax.random.key(0))
    return eqx.tree_deserialise_leaves(weights_file, skeleton)


@eqx.filter_jit
def _logits(model, images):
    return jax.vmap(model)(images)


def classifier_accuracy(model: Classifier, images, labels, *, batch: int = 1000) -> float:
    """The fraction of `images` (shape `(num, 28, 28)`, pixels in [0, 1]) whose arg-max logit is
    the label."""
    correct = 0
    for start in range(0, len(images), batch):
        logits = _logits(model, jnp.asarray(images[start : start + batch]))
        batch_labels = jnp.asarray(labels[start : start + batch])
        correct += int(jnp.sum(jnp.argmax(logits, -1) == batch_labels))
    return correct / len(images)


def classifier_features(
    model: Classifier, images: Float[ArrayLike, "num 28 28"], *, batch: int = 1000
) -> Float[Array, "num features"]:
    """Feature vectors of many images, computed `batch` at a time."""
    return jnp.concatenate(
        [_embed(model, jnp.asarray(images[i : i + batch])) for i in range(0, len(images), batch)]
    )


@eqx.filter_jit
def _embed(model, images):
    return jax.vmap(model.embed)(images)


def predict(model: Classifier, images: Float[ArrayLike, "num 28 28"]) -> Int[Array, " num"]:
    """Predicted labels of many images."""
    return jnp.argmax(_logits(model, jnp.asarray(images)), -1)
