r"""Fréchet distances between Gaussians fitted to features (the "FID" of these datasets)."""

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from .._custom_types import ArrayLike, Float
from .._grid import resample


def frechet_distance(
    features_x: Float[ArrayLike, "n dx"], features_y: Float[ArrayLike, "m dy"]
) -> float:
    r"""The Fréchet (2-Wasserstein) distance squared between the Gaussians fitted to two feature
    sets,

    $$d^2 = \|\mu_x - \mu_y\|^2 + \operatorname{tr}\big(\Sigma_x + \Sigma_y
    - 2 (\Sigma_x^{1/2} \Sigma_y \Sigma_x^{1/2})^{1/2}\big),$$

    computed in float64 with symmetric eigendecompositions (so the matrix square root is real
    and the result is $\ge 0$). Unbiased covariances ($n - 1$).

    **Arguments:**

    - `features_x`, `features_y`: shape `(n, d)` and `(m, d)`, `n, m >= 2`.

    **Returns:** $d^2$ as a Python float (what FID reports).
    """
    fx, fy = np.asarray(features_x, np.float64), np.asarray(features_y, np.float64)
    if fx.ndim != 2 or fy.ndim != 2 or fx.shape[1] != fy.shape[1] or min(len(fx), len(fy)) < 2:
        raise ValueError(
            "`features_x` and `features_y` must have shapes (n, d) and (m, d) with n, m >= 2; "
            f"got {fx.shape} and {fy.shape}."
        )
    mx, my = fx.mean(0), fy.mean(0)
    sx, sy = np.cov(fx, rowvar=False), np.cov(fy, rowvar=False)
    w, v = np.linalg.eigh(sx)
    root_x = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    middle = root_x @ sy @ root_x
    cross = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (middle + middle.T)), 0.0, None)))
    return float(np.sum((mx - my) ** 2) + np.trace(sx) + np.trace(sy) - 2.0 * cross)


def frechet_classifier_distance(
    x: Float[ArrayLike, "n _ _"],
    reference: Float[ArrayLike, "m _ _"],
    *,
    dataset: str = "mnist",
    classifier=None,
    transform: Callable | None = None,
) -> float:
    r"""The Fréchet distance on the features of the project's small classifier: the
    familiar FID-style number for MNIST and Fashion-MNIST samples.

    Both sets are brought to the classifier's 28 x 28 grid with spectral
    [`resample`][numpyro_fsdiff.resample] (any resolution in, e.g. samples drawn at 56 x 56),
    passed through `transform` (e.g. `PixelScaling().to_pixels` for model-space samples; the
    classifier reads pixel intensities in $[0, 1]$), embedded by the classifier's feature layer,
    and compared with [`frechet_distance`][numpyro_fsdiff.metrics.frechet_distance].

    Draw `reference` (and any data-against-data floor) as a random subset: MNIST's splits
    are ordered by the writers' source, and at n = 1000 its first test images score 27.7
    against test images 5,000-5,999, against 5.65 for random training images against random
    test images (`benchmarks/results/frechet_floors.md`).

    **Arguments:**

    - `x`: samples, shape `(n, n1, n2)`.
    - `reference`: reference images (e.g. the test set), shape `(m, r1, r2)`.
    - `dataset`: `"mnist"` or `"fashion-mnist"`, which shipped classifier to use.
    - `classifier`: a [`Classifier`][numpyro_fsdiff.Classifier] instead of the shipped one.
    - `transform`: applied to both sets after resampling, before the classifier.

    **Returns:** $d^2$.
    """
    from .._classifier import CLASSIFIER_SHAPE, classifier_features, load_classifier

    model = load_classifier(dataset) if classifier is None else classifier

    def features(images, name):
        images = jnp.asarray(images)
        if images.ndim != 3:
            raise ValueError(f"`{name}` must have shape (num, n1, n2); got {images.shape}.")
        if tuple(images.shape[1:]) != CLASSIFIER_SHAPE:
            images = resample(images, CLASSIFIER_SHAPE)
        if transform is not None:
            images = transform(images)
        return classifier_features(model, images)

    return frechet_distance(features(x, "x"), features(reference, "reference"))
