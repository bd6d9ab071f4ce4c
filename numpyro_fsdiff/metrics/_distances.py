r"""Distances between sample sets of fields: energy distance, Vendi score, pixel histograms."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp

from .._custom_types import ArrayLike, Float, Scalar
from .._grid import Grid


def _flatten(name: str, x, grid: Grid | None):
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"`{name}` must have shape (num, n1, n2) or (num, dim); got {x.shape}.")
    if grid is not None:
        if x.ndim != 3 or tuple(x.shape[1:]) != grid.shape:
            raise ValueError(
                f"`{name}` must have shape (num, {grid.shape[0]}, {grid.shape[1]}); got {x.shape}."
            )
        weight = grid.cell_area
    else:
        weight = 1.0
    if x.shape[0] < 1:
        raise ValueError(f"`{name}` must hold at least one sample; got shape {x.shape}.")
    # Scaling by sqrt(|D|/N) turns the Euclidean norm into the L2(D) quadrature norm.
    return x.reshape(x.shape[0], -1) * jnp.sqrt(jnp.asarray(weight, x.dtype))


def _check_batch(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an int >= 1; got {batch_size!r}.")
    return batch_size


_UNSET = object()


@eqx.filter_jit
def _sum_distance(a, b, batch_size: int):
    """Sum of |a_i - b_j| over all pairs, `batch_size` rows of `a` at a time."""
    b_sq = jnp.sum(b**2, axis=1)

    def row(a_i):
        # lax.map vmaps this over `batch_size` rows at a time: a (batch, m) block of distances.
        sq = jnp.sum(a_i**2) + b_sq - 2.0 * (b @ a_i)
        return jnp.sum(jnp.sqrt(jnp.maximum(sq, 0.0)))

    sums = jax.lax.map(row, a, batch_size=min(batch_size, a.shape[0]))
    return jnp.sum(sums)


def energy_distance(
    x: Float[ArrayLike, "n ..."],
    y: Float[ArrayLike, "m ..."],
    *,
    grid: Grid | None = None,
    unbiased: bool = True,
    batch_size: int = 512,
    chunk_size=_UNSET,
) -> Scalar:
    r"""The energy distance (Riesz-kernel MMD with exponent $r = 1$) between two sample sets,

    $$\mathcal{E}(X, Y) = 2\,\mathbb{E}\|X - Y\| - \mathbb{E}\|X - X'\| - \mathbb{E}\|Y - Y'\|.$$

    By default (`unbiased=True`) the U-statistic: the within-set means run over the
    $n(n-1)$ and $m(m-1)$ pairs of *distinct* samples, so the estimate is unbiased,
    $\mathbb{E}\,\hat{\mathcal{E}} = \mathcal{E}$, and scatters around 0 (it can be negative)
    for two samples of one law. `unbiased=False` gives the V-statistic (means over all
    $n^2$, $nm$, $m^2$ pairs, self-pairs included): $\ge 0$, but biased upwards by
    $\mathbb{E}\|X - X'\|/n + \mathbb{E}\|Y - Y'\|/m$, which at small $n$ is as large as the
    differences between good samplers. $\mathcal{E}$ equals $2\,\mathrm{MMD}^2$ for the kernel
    $k(x, y) = \tfrac12(\|x\| + \|y\| - \|x - y\|)$, and vanishes in the population limit
    iff the laws agree.

    With a `grid`, $\|\cdot\|$ is the $L^2(D)$ norm by quadrature, so the number is comparable
    across resolutions; without, the Euclidean norm of the flattened samples. The pairwise
    distances are formed `batch_size` rows at a time (memory `batch_size` x `m`), so 10,000 x
    10,000 pairs of 28 x 28 fields fit easily.

    The centroid of both sets is subtracted first; distances do not change, but the
    expansion $\|a\|^2 + \|b\|^2 - 2 a \cdot b$ loses less precision.

    **Arguments:**

    - `x`, `y`: sample sets of shape `(n, n1, n2)` and `(m, n1, n2)` (or `(n, dim)` without a
      grid); at least 2 samples each for the U-statistic.
    - `grid`: the grid of the fields, or `None`.
    - `unbiased`: the U-statistic (default) or the V-statistic.
    - `batch_size`: rows per block (`chunk_size`, its old name, is deprecated).

    **Returns:** $\hat{\mathcal{E}}$, in the units of the fields.

    **Raises:** `ValueError` naming `x`/`y` for wrong shapes or too few samples, `batch_size`.
    """
    if chunk_size is not _UNSET:
        warnings.warn("`chunk_size=` is deprecated; use `batch_size=`.", DeprecationWarning,
                      stacklevel=2)
        batch_size = chunk_size
    batch_size = _check_batch(batch_size)
    a, b = _flatten("x", x, grid), _flatten("y", y, grid)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"`x` and `y` must have the same field shape; got {jnp.shape(x)} and "
                         f"{jnp.shape(y)}.")
    n, m = a.shape[0], b.shape[0]
    if unbiased and min(n, m) < 2:
        raise ValueError(
            f"`x` and `y` must hold at least 2 samples each for the unbiased energy distance; "
            f"got {n} and {m}."
        )
    centre = 0.5 * (jnp.mean(a, 0) + jnp.mean(b, 0))
    a, b = a - centre, b - centre
    # Self-distances are zero, so the sum over distinct pairs is the sum over all pairs.
    within_a = n * (n - 1) if unbiased else n * n
    within_b = m * (m - 1) if unbiased else m * m
    return (2.0 * _sum_distance(a, b, batch_size) / (n * m)
            - _sum_distance(a, a, batch_size) / within_a
            - _sum_distance(b, b, batch_size) / within_b)


def vendi_score(
    x: Float[ArrayLike, "n ..."],
    *,
    grid: Grid | None = None,
    kernel: str = "cosine",
    bandwidth: float | None = None,
) -> Scalar:
    r"""The Vendi score: the exponential of the Shannon entropy of the eigenvalues of $K/n$,

    $$\mathrm{VS} = \exp\Big(-\sum_i \lambda_i \log \lambda_i\Big), \qquad
    \lambda = \operatorname{eig}(K / n),\ K_{ij} = k(x_i, x_j),\ k(x, x) = 1,$$

    the effective number of distinct samples: 1 for identical samples, $n$ for mutually
    orthogonal ones.

    Kernels: `"cosine"`, $k = \langle x, y\rangle / (\|x\|\|y\|)$ in $L^2(D)$ (with a grid), whose
    nonzero eigenvalues are those of the $d \times d$ matrix $\tilde X^\top \tilde X / n$ of the
    normalised samples, so large $n$ is cheap; `"rbf"`, $k = \exp(-\|x - y\|^2 / (2h^2))$ with
    `bandwidth` $h$ (default: the median pairwise distance), an $n \times n$ eigenproblem.

    **Arguments:**

    - `x`: samples, shape `(n, n1, n2)` (or `(n, dim)` without a grid).
    - `grid`: their grid (sets the $L^2(D)$ norm), or `None`.
    - `kernel`: `"cosine"` or `"rbf"`.
    - `bandwidth`: $h > 0$ for `"rbf"`.

    **Returns:** the score, in $[1, n]$.

    ??? cite "Reference"

        Friedman and Dieng, *The Vendi Score: A Diversity Evaluation Metric for Machine
        Learning*, TMLR 2023.
    """
    a = _flatten("x", x, grid)
    n = a.shape[0]
    if kernel == "cosine":
        norms = jnp.linalg.norm(a, axis=1, keepdims=True)
        unit = a / jnp.maximum(norms, jnp.finfo(a.dtype).tiny)
        small = unit.T @ unit if unit.shape[1] < n else unit @ unit.T
        eigenvalues = jnp.linalg.eigvalsh(small / n)
    elif kernel == "rbf":
        sq = jnp.sum(a**2, 1)[:, None] + jnp.sum(a**2, 1)[None, :] - 2.0 * a @ a.T
        sq = jnp.maximum(sq, 0.0)
        if bandwidth is None:
            off = sq[~jnp.eye(n, dtype=bool)] if n > 1 else sq.reshape(-1)
            h2 = jnp.maximum(jnp.median(off), jnp.finfo(a.dtype).tiny)
        else:
            if not float(bandwidth) > 0:
                raise ValueError(f"`bandwidth` must be > 0; got {bandwidth!r}.")
            h2 = jnp.asarray(bandwidth, a.dtype) ** 2
        eigenvalues = jnp.linalg.eigvalsh(jnp.exp(-sq / (2.0 * h2)) / n)
    else:
        raise ValueError(f"`kernel` must be 'cosine' or 'rbf'; got {kernel!r}.")
    lam = jnp.clip(eigenvalues, 0.0, None)
    lam = lam / jnp.sum(lam)
    entropy = -jnp.sum(jnp.where(lam > 0, lam * jnp.log(jnp.where(lam > 0, lam, 1.0)), 0.0))
    return jnp.exp(entropy)


def pixel_histogram_distance(
    x: Float[ArrayLike, "n ..."],
    y: Float[ArrayLike, "m ..."],
    *,
    bins: int = 64,
    value_range: tuple[float, float] | None = None,
) -> Scalar:
    r"""Total-variation distance between the pixel-value histograms of two sample sets,
    $\tfrac12 \sum_b |p_b - q_b| \in [0, 1]$.

    **Arguments:**

    - `x`, `y`: arrays of any shapes (all values are pooled).
    - `bins`: the number of equal-width bins.
    - `value_range`: `(lo, hi)` of the bins; default the range of both sets together
      (values outside a given range are dropped from both histograms).

    **Returns:** the distance.
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"`bins` must be an int >= 1; got {bins!r}.")
    x, y = jnp.ravel(jnp.asarray(x)), jnp.ravel(jnp.asarray(y))
    if value_range is None:
        lo = jnp.minimum(jnp.min(x), jnp.min(y))
        hi = jnp.maximum(jnp.max(x), jnp.max(y))
    else:
        lo, hi = value_range
        if not float(hi) > float(lo):
            raise ValueError(f"`value_range` must be (lo, hi) with hi > lo; got {value_range!r}.")
    p, _ = jnp.histogram(x, bins=bins, range=(lo, hi))
    q, _ = jnp.histogram(y, bins=bins, range=(lo, hi))
    p = p / jnp.maximum(jnp.sum(p), 1)
    q = q / jnp.maximum(jnp.sum(q), 1)
    return 0.5 * jnp.sum(jnp.abs(p - q))
