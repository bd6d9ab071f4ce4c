r"""Radially averaged power spectra of fields, grid-independent, and their plot."""

import jax.numpy as jnp
import numpy as np

from ._covariance import AbstractCovariance
from ._custom_types import ArrayLike, Float
from ._grid import Grid
from ._validation import check_data


def radial_power_spectrum(
    xs: Float[ArrayLike, "num n1 n2"], lengths=(1.0, 1.0)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""The radially averaged power $P(r) = \operatorname{mean}_{|k| \in [r - 1/2, r + 1/2)}
    \mathbb{E}|c_k|^2$ of the Fourier coefficients $c_k = \frac{1}{N}\sum_j u(x_j)
    e^{-2\pi i k \cdot x_j}$ of fields $u$.

    The coefficients are those of the function (they do not change when a band-limited field
    is refined spectrally), so spectra from different grids agree on their shared modes; for
    $u \sim N(0, Q)$, $\mathbb{E}|c_k|^2 = \lambda_k / |D|$ (see
    [`covariance_power_spectrum`][numpyro_fsdiff.covariance_power_spectrum]).

    **Arguments:**

    - `xs`: fields of shape `(num, n1, n2)`, `num >= 2`.
    - `lengths`: the domain's side lengths (wavenumbers are integers on it).

    **Returns:** `(radii, power, stderr)`: integer shell radii, the mean power per shell and
    its standard error over the fields (each field's shell mean one draw).
    """
    xs = np.asarray(check_data("xs", xs, ndim=3))
    if xs.shape[0] < 2:
        raise ValueError(f"`xs` must hold at least 2 fields; got shape {xs.shape}.")
    grid = Grid(xs.shape[-2:], lengths)
    power = np.abs(np.fft.fft2(xs)) ** 2 / grid.size**2
    k1, k2 = np.asarray(grid.wavenumbers())
    radius = np.rint(np.sqrt(k1**2 + k2**2)).astype(int)
    radii = np.unique(radius)
    per_field = np.stack([power[:, radius == r].mean(-1) for r in radii], -1)
    stderr = per_field.std(0, ddof=1) / np.sqrt(xs.shape[0])
    return radii, per_field.mean(0), stderr


def covariance_power_spectrum(
    covariance: AbstractCovariance, shape, lengths=(1.0, 1.0)
) -> tuple[np.ndarray, np.ndarray]:
    r"""$\lambda_k/|D|$ of $N(0, Q)$, averaged over the shells of
    [`radial_power_spectrum`][numpyro_fsdiff.radial_power_spectrum] on a grid of `shape`.

    **Returns:** `(radii, power)`.
    """
    grid = Grid(shape, lengths)
    lam = np.asarray(covariance.eigenvalues(grid)) / grid.area
    lam = lam / np.asarray(grid.nyquist_multiplicity())  # per wavenumber, not per grid mode
    k1, k2 = np.asarray(grid.wavenumbers())
    radius = np.rint(np.sqrt(k1**2 + k2**2)).astype(int)
    radii = np.unique(radius)
    return radii, np.array([lam[radius == r].mean() for r in radii])


def compare_spectra(
    samples: dict,
    covariance: AbstractCovariance,
    cutoff: int,
    lengths=(1.0, 1.0),
    *,
    reference_factor: float = 1.0,
) -> dict:
    r"""How the samples of a prior on finer grids compare, shell by shell, with the coarsest
    grid's samples and with $N(0, Q)$: the resolution check of a measure on functions.

    For each finer grid, with $P(r)$ of
    [`radial_power_spectrum`][numpyro_fsdiff.radial_power_spectrum]:

    - *shared shells* $1 \le r \le K$ (`cutoff`; modes every grid holds): the ratio to the
      coarsest grid's $P(r)$ and $z = \Delta P / \sqrt{s_1^2 + s_2^2}$ from the standard errors;
    - *new shells*, those wholly outside the box $|k_i| \le K$ ($r \ge \lceil K\sqrt2 +
      \tfrac12\rceil$) below the grid's Nyquist radius: the ratio to $Q$'s $\lambda_k/|D|$
      ([`covariance_power_spectrum`][numpyro_fsdiff.covariance_power_spectrum]) times
      `reference_factor`, and its $z$;
    - the standard deviation of the fields' part above $K$ (`band_limit`'s complement).

    A band-limited model ($S = -x$ above $K$) gives ratios 1 within sampling error on both.

    **Arguments:**

    - `samples`: `{n: fields (num, n, n)}` for square grids, at least two, each `num >= 2`.
    - `covariance`: the noise covariance $Q$.
    - `cutoff`: the band $K$, at most the coarsest grid's $n/2 - 1$.
    - `lengths`: the domain's side lengths.
    - `reference_factor`: the variance the sampler gives a mode whose score is exactly $-x$,
      relative to $Q$: 1 for an exact solve (the default); about $1 + \bar\beta h/4$ for
      Euler-Maruyama with steps $h$ (1.0070 for 200 uniform steps), whose own bias would
      otherwise read as the model's.

    **Returns:** `{str(n): {...}}` for each grid but the coarsest, with `shared_ratio_median`,
    `shared_abs_z_median`, `shared_abs_z_max`, `new_ratio_median`, `new_ratio_range`,
    `new_abs_z_median`, `high_std` (NaN where a grid has no new shell), and `new_from`, the
    first new shell.

    **Raises:** `ValueError` for fewer than two grids or a cutoff the coarsest grid cannot hold.
    """
    return _compare_spectra(samples, covariance, cutoff, lengths, (reference_factor,))[0]


def compare_spectra_and_sampler_law(
    samples: dict, covariance: AbstractCovariance, cutoff: int, factor: float
) -> dict:
    """`compare_spectra` against $Q$, each grid's row also carrying the new shells against
    `factor` $Q$ (the sampler's own law on them) as `new_ratio_median_sampler` and
    `new_abs_z_median_sampler`; the spectra are computed once."""
    against_q, against_sampler = _compare_spectra(
        samples, covariance, cutoff, reference_factors=(1.0, factor))
    for n, row in against_q.items():
        row["new_ratio_median_sampler"] = against_sampler[n]["new_ratio_median"]
        row["new_abs_z_median_sampler"] = against_sampler[n]["new_abs_z_median"]
    return against_q


def _compare_spectra(
    samples, covariance, cutoff, lengths=(1.0, 1.0), reference_factors=(1.0,)
) -> list[dict]:
    """`compare_spectra` for each of `reference_factors`, from one computation of the spectra."""
    from ._grid import band_limit

    if not isinstance(samples, dict) or len(samples) < 2:
        got = sorted(samples) if isinstance(samples, dict) else type(samples).__name__
        raise ValueError(f"`samples` must map at least two grid sizes to fields; got {got}.")
    sizes = sorted(samples)
    if isinstance(cutoff, bool) or not isinstance(cutoff, int) or not 1 <= cutoff < sizes[0] // 2:
        raise ValueError(
            f"`cutoff` must be an int in [1, {sizes[0] // 2 - 1}] for the {sizes[0]} x "
            f"{sizes[0]} grid; got {cutoff!r}."
        )
    for reference_factor in reference_factors:
        if not np.isfinite(reference_factor) or reference_factor <= 0:
            raise ValueError(
                f"`reference_factor` must be a positive number; got {reference_factor!r}."
            )
    new_from = int(np.ceil(cutoff * np.sqrt(2) + 0.5))
    r0, p0, s0 = radial_power_spectrum(samples[sizes[0]], lengths)
    outs = [{} for _ in reference_factors]
    for n in sizes[1:]:
        xs = np.asarray(samples[n])
        r, p, s = radial_power_spectrum(xs, lengths)
        shared = [(i, int(np.where(r0 == ri)[0][0])) for i, ri in enumerate(r) if 1 <= ri <= cutoff]
        z_shared = np.array([(p[i] - p0[j]) / np.hypot(s[i], s0[j]) for i, j in shared])
        ratio_shared = np.array([p[i] / p0[j] for i, j in shared])
        _, q_power = covariance_power_spectrum(covariance, (n, n), lengths)
        new = [i for i, ri in enumerate(r) if new_from <= ri < n // 2]
        high = xs - np.asarray(band_limit(jnp.asarray(xs), cutoff))
        for reference_factor, out in zip(reference_factors, outs):
            pq = reference_factor * q_power
            ratio_new = np.array([p[i] / pq[i] for i in new]) if new else np.array([np.nan])
            z_new = np.array([(p[i] - pq[i]) / s[i] for i in new]) if new else np.array([np.nan])
            out[str(n)] = dict(
                shared_ratio_median=float(np.median(ratio_shared)),
                shared_abs_z_median=float(np.median(np.abs(z_shared))),
                shared_abs_z_max=float(np.max(np.abs(z_shared))),
                new_ratio_median=float(np.median(ratio_new)),
                new_ratio_range=[float(np.min(ratio_new)), float(np.max(ratio_new))],
                new_abs_z_median=float(np.median(np.abs(z_new))),
                high_std=float(high.std()),
                new_from=new_from,
            )
    return outs


def plot_power_spectra(
    spectra: dict, *, covariance: AbstractCovariance | None = None, cutoff=None, ax=None
):
    r"""Plot radially averaged power spectra (log scale) on one axis: the figure of the
    resolution benchmark and the demo.

    **Arguments:**

    - `spectra`: `{label: fields (num, n1, n2)}` or `{label: (radii, power, stderr)}`.
    - `covariance`: also draw $Q$'s spectrum on the finest grid given.
    - `cutoff`: draw a vertical line at the band cutoff $K$.
    - `ax`: a matplotlib axis (a new figure if `None`).

    **Returns:** the matplotlib axis.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    finest = None
    for label, value in spectra.items():
        if not isinstance(value, tuple):
            value = jnp.asarray(value)
            finest = value.shape[-2:] if finest is None or value.shape[-1] > finest[-1] else finest
            value = radial_power_spectrum(value)
        radii, power, stderr = value
        keep = radii > 0
        ax.errorbar(radii[keep], power[keep], yerr=2 * stderr[keep], label=label, lw=1, ms=2)
    if covariance is not None and finest is not None:
        radii, power = covariance_power_spectrum(covariance, finest)
        ax.plot(radii[radii > 0], power[radii > 0], "k--", lw=1, label="N(0, Q)")
    if cutoff is not None:
        ax.axvline(cutoff, color="grey", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("|k|")
    ax.set_ylabel("power E|c_k|^2")
    ax.legend(fontsize=7)
    return ax
