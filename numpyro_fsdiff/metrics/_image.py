r"""Image-quality and calibration metrics of posterior summaries: PSNR, SSIM, credible
intervals and their coverage (weighted draws included)."""

import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import Array, Field, Float, Scalar
from .._validation import check_data, is_concrete


def _data_range(truth, data_range):
    if data_range is None:
        return jnp.max(truth) - jnp.min(truth)
    return jnp.asarray(data_range)


def psnr(estimate: Field, truth: Field, *, data_range=None) -> Scalar:
    r"""Peak signal-to-noise ratio $10 \log_{10}(R^2 / \mathrm{MSE})$ in dB.

    **Arguments:**

    - `estimate`, `truth`: fields of the same shape.
    - `data_range`: $R$; by default $\max(\text{truth}) - \min(\text{truth})$.
    """
    _check_same_shape(estimate, truth)
    mse = jnp.mean((jnp.asarray(estimate) - jnp.asarray(truth)) ** 2)
    return 10.0 * jnp.log10(_data_range(truth, data_range) ** 2 / mse)


def _gaussian_window(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size) - (size - 1) / 2
    w = np.exp(-(x**2) / (2 * sigma**2))
    return w / w.sum()


def _filter_valid(image, window):
    """Separable 'valid' correlation with a symmetric 1-D window along both axes."""
    w = jnp.asarray(window, dtype=image.dtype)
    rows = jax.vmap(lambda r: jnp.convolve(r, w, mode="valid"))(image)
    return jax.vmap(lambda c: jnp.convolve(c, w, mode="valid"), in_axes=1, out_axes=1)(rows)


def ssim(estimate: Field, truth: Field, *, data_range=None, window: int = 7, sigma=1.5) -> Scalar:
    r"""Structural similarity (Wang et al. 2004) with a Gaussian window, averaged over the
    'valid' positions:

    $$\mathrm{SSIM} = \frac{(2\mu_x\mu_y + C_1)(2\sigma_{xy} + C_2)}
    {(\mu_x^2 + \mu_y^2 + C_1)(\sigma_x^2 + \sigma_y^2 + C_2)}, \quad C_1 = (0.01R)^2,\
    C_2 = (0.03R)^2.$$

    **Arguments:**

    - `estimate`, `truth`: fields of the same shape, each side at least `window`.
    - `data_range`: $R$; by default the range of `truth`.
    - `window`: the window width in pixels (odd; 7 suits 28 x 28 images); `sigma` its
      standard deviation in pixels.

    ??? cite "Reference"

        Wang, Bovik, Sheikh and Simoncelli, *Image quality assessment: from error visibility
        to structural similarity*, IEEE TIP 2004.
    """
    _check_same_shape(estimate, truth)
    if min(jnp.shape(truth)) < window:
        raise ValueError(
            f"`window` must not exceed the image side; got window={window} for shape "
            f"{jnp.shape(truth)}."
        )
    x = jnp.asarray(estimate, dtype=jnp.result_type(float))
    y = jnp.asarray(truth, dtype=x.dtype)
    r = _data_range(y, data_range)
    c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2
    w = _gaussian_window(window, sigma)
    mx, my = _filter_valid(x, w), _filter_valid(y, w)
    sxx = _filter_valid(x * x, w) - mx**2
    syy = _filter_valid(y * y, w) - my**2
    sxy = _filter_valid(x * y, w) - mx * my
    index = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return jnp.mean(index)


def _normalised_weights(weights, num: int) -> Float[Array, " S"] | None:
    """`weights` as a checked array of `num` non-negative values summing to 1, or `None`."""
    if weights is None:
        return None
    weights = check_data("weights", weights, ndim=1)
    if weights.shape[0] != num:
        raise ValueError(
            f"`weights` must hold one weight per draw ({num}); got shape {tuple(weights.shape)}."
        )
    if is_concrete(weights) and (bool(jnp.any(weights < 0)) or not float(jnp.sum(weights)) > 0):
        raise ValueError("`weights` must be >= 0 with a positive sum; got negative or all-zero.")
    return weights / jnp.sum(weights)


def weighted_quantile(
    samples: Float[Array, " S *shape"], q, weights: Float[Array, " S"] | None = None
) -> Array:
    r"""Quantiles along the first axis of weighted draws; NumPy's default (linear) quantile
    when `weights` is `None` or uniform.

    With the draws $x_{(1)} \le \dots \le x_{(S)}$ of one pixel sorted, and their normalised
    weights $w_{(i)}$, the $i$-th draw sits at the probability

    $$p_i = \frac{\sum_{j < i} w_{(j)} + \tfrac12 w_{(i)} - \tfrac12 w_{(1)}}
    {1 - \tfrac12 w_{(1)} - \tfrac12 w_{(S)}},$$

    the middle of its weight, rescaled so that $p_1 = 0$ and $p_S = 1$; the quantile $q$ is
    the linear interpolation of $(p_i, x_{(i)})$ at $q$. For equal weights $p_i = (i - 1)/(S -
    1)$, NumPy's default rule.

    **Arguments:**

    - `samples`: `S` draws, shape `(S, ...)`.
    - `q`: a probability or an array of them, in $[0, 1]$.
    - `weights`: one weight $\ge 0$ per draw (normalised here), or `None` for equal ones.

    **Returns:** an array of shape `jnp.shape(q) + samples.shape[1:]`.

    !!! example

        ```python
        x = jnp.asarray([3.0, 0.0, 2.0, 1.0])
        w = jnp.asarray([0.4, 0.1, 0.3, 0.2])  # sorted draws 0, 1, 2, 3 at p = 0, .2, .53, 1
        weighted_quantile(x, 0.1, w)  # 0.5: half-way from 0 to 1
        weighted_quantile(x, 0.1, jnp.ones(4))  # 0.3 = jnp.quantile(x, 0.1)
        ```
    """
    samples = jnp.asarray(samples)
    weights = _normalised_weights(weights, samples.shape[0])
    if weights is None:
        return jnp.quantile(samples, q, axis=0)
    q = jnp.asarray(q, dtype=samples.dtype)
    if samples.shape[0] == 1:
        return jnp.broadcast_to(samples[0], q.shape + samples.shape[1:])
    flat = samples.reshape(samples.shape[0], -1).T  # (pixels, S)
    order = jnp.argsort(flat, axis=1)
    values = jnp.take_along_axis(flat, order, axis=1)
    w = weights[order]
    cumulative = jnp.cumsum(w, axis=1) - 0.5 * w - 0.5 * w[:, :1]
    positions = cumulative / (1 - 0.5 * w[:, :1] - 0.5 * w[:, -1:])
    out = jax.vmap(lambda p, v: jnp.interp(jnp.ravel(q), p, v))(positions, values)  # (pix, q)
    return out.T.reshape(q.shape + samples.shape[1:])


def credible_interval(
    samples: Float[Array, "S n1 n2"], level: float = 0.9, *, weights=None
) -> tuple[Field, Field]:
    r"""Pixelwise equal-tailed credible interval `(lower, upper)` of probability `level`: the
    quantiles $(1 - \text{level})/2$ and $(1 + \text{level})/2$ of the draws (weighted ones
    by [`weighted_quantile`][numpyro_fsdiff.metrics.weighted_quantile] when `weights` are
    given, e.g. `Posterior.weights`).

    **Raises:** `ValueError` if `level` is not in $(0, 1)$ or `weights` do not fit.
    """
    if not 0 < level < 1:
        raise ValueError(f"`level` must be in (0, 1); got {level!r}.")
    tail = (1 - level) / 2
    if weights is None:
        return jnp.quantile(samples, tail, axis=0), jnp.quantile(samples, 1 - tail, axis=0)
    lower, upper = weighted_quantile(samples, jnp.asarray([tail, 1 - tail]), weights)
    return lower, upper


def coverage(
    samples: Float[Array, "S n1 n2"], truth: Field, level: float = 0.9, *, weights=None
) -> Scalar:
    r"""The fraction of pixels whose true value lies in the pixelwise equal-tailed credible
    interval of probability `level` (ideally close to `level` for a calibrated posterior);
    with `weights`, the interval of the weighted draws (see
    [`credible_interval`][numpyro_fsdiff.metrics.credible_interval])."""
    if jnp.shape(samples)[1:] != jnp.shape(truth):
        raise ValueError(
            f"`samples` must have shape (S, *truth.shape) = (S, {jnp.shape(truth)}); got "
            f"{jnp.shape(samples)}."
        )
    lower, upper = credible_interval(samples, level, weights=weights)
    return jnp.mean((truth >= lower) & (truth <= upper))


def _check_same_shape(estimate, truth):
    if jnp.shape(estimate) != jnp.shape(truth):
        raise ValueError(
            f"`estimate` must have the shape of `truth` {jnp.shape(truth)}; got "
            f"{jnp.shape(estimate)}."
        )
