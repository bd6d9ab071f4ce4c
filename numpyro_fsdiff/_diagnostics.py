r"""MCMC over fields -> ArviZ 1.x data with image dimensions, convergence summaries, panels."""

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ._grid import Grid
from ._io import save_figure

IMAGE_DIMS = ("x1", "x2")
"""The dimension names of a field's two spatial axes in the ArviZ data."""


def default_summaries(grid: Grid) -> dict[str, Callable]:
    r"""Scalar summaries of a field: its spatial mean $\frac{1}{|D|}\int_D u$ and its
    $L^2(D)$ norm $\|u\|$, both by the grid quadrature."""
    return {
        "mean": lambda u: jnp.sum(u, axis=(-2, -1)) * grid.cell_area / grid.area,
        "norm": lambda u: jnp.sqrt(grid.norm_squared(u)),
    }


def _field_names(samples: Mapping[str, np.ndarray], fields) -> list[str]:
    if fields is None:
        return [name for name, value in samples.items() if np.ndim(value) >= 4]
    fields = [fields] if isinstance(fields, str) else list(fields)
    for name in fields:
        if name not in samples:
            raise ValueError(
                f"`fields` names a site {name!r} that is not in the samples {sorted(samples)}."
            )
        if np.ndim(samples[name]) < 4:
            raise ValueError(
                f"`fields` site {name!r} must have at least two field axes per draw; got draws of "
                f"shape {np.shape(samples[name])[2:]}."
            )
    return fields


def image_coords(grid: Grid) -> dict[str, np.ndarray]:
    """The point coordinates $j_i L_i / n_i$ of `grid` under the image dims `("x1", "x2")`."""
    return {
        d: np.arange(n) * (length / n) for d, n, length in zip(IMAGE_DIMS, grid.shape, grid.lengths)
    }


def summary_values(fields, summaries: Mapping[str, Callable]) -> dict[str, np.ndarray]:
    """`{name: fn(field)}` for fields `(..., n1, n2)`: arrays of the batch shape `(...)`."""
    flat = jnp.reshape(fields, (-1,) + fields.shape[-2:])
    return {
        key: np.asarray(jax.vmap(fn)(flat)).reshape(fields.shape[:-2])
        for key, fn in summaries.items()
    }


def to_datatree(
    mcmc,
    *,
    grid: Grid | None = None,
    fields: str | Sequence[str] | None = None,
    summaries: Mapping[str, Callable] | None = None,
    coords: Mapping | None = None,
    dims: Mapping[str, Sequence[str]] | None = None,
):
    r"""Convert a NumPyro MCMC run over fields into an ArviZ 1.x `xarray.DataTree`.

    Calls `arviz.from_numpyro` with named image dimensions: the last two axes of every field
    site get the dims `("x1", "x2")` with the physical point coordinates $j_i L_i / n_i$ of
    `grid` as coordinates (fields whose shape is not `grid.shape` get their own dims
    `(f"{name}_x1", f"{name}_x2")`). Each field's scalar `summaries` are added to the
    posterior group as variables `f"{name}_{summary}"` with dims `(chain, draw, *batch)`, so
    their R-hat and ESS can be read next to the pixels'.

    **Arguments:**

    - `mcmc`: a finished `numpyro.infer.MCMC`.
    - `grid`: the [`Grid`][numpyro_fsdiff.Grid] of the fields (default: the unit square of the
      first field's shape).
    - `fields`: the site names that are fields (default: all sites with at least two axes
      per draw).
    - `summaries`: `{name: fn}` with `fn` mapping fields `(..., n1, n2)` to scalars `(...)`
      (default: [`default_summaries`][numpyro_fsdiff.diagnostics.default_summaries]; `{}` for none).
    - `coords`, `dims`: extra coordinates and dims for `arviz.from_numpyro` (they override).

    **Returns:** the `DataTree` (groups `posterior`, `sample_stats`, ...).

    **Raises:** `ValueError` if a named field is missing or has fewer than two axes.
    """
    import arviz as az
    import xarray as xr

    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    names = _field_names(samples, fields)
    if grid is None and names:
        grid = Grid(samples[names[0]].shape[-2:])
    all_dims: dict[str, list[str]] = {}
    all_coords: dict[str, np.ndarray] = {}
    if grid is not None:
        all_coords.update(image_coords(grid))
    for name in names:
        value = samples[name]
        batch = [f"{name}_dim_{i}" for i in range(value.ndim - 4)]
        if grid is not None and value.shape[-2:] == grid.shape:
            all_dims[name] = batch + list(IMAGE_DIMS)
        else:
            all_dims[name] = batch + [f"{name}_x1", f"{name}_x2"]
    all_dims.update(dims or {})
    all_coords.update(coords or {})
    if not any(d in IMAGE_DIMS for ds in all_dims.values() for d in ds):
        all_coords = {k: v for k, v in all_coords.items() if k not in IMAGE_DIMS}
    data = az.from_numpyro(mcmc, dims=all_dims, coords=all_coords)
    if summaries is None:
        summaries = default_summaries(grid) if grid is not None else {}
    posterior = data["posterior"].to_dataset()
    for name in names:
        value = samples[name]
        field_grid = (
            grid if grid is not None and value.shape[-2:] == grid.shape else Grid(value.shape[-2:])
        )
        fns = summaries if field_grid is grid else default_summaries(field_grid)
        for key, out in summary_values(value, fns).items():
            posterior[f"{name}_{key}"] = xr.DataArray(
                out, dims=["chain", "draw"] + all_dims[name][:-2]
            )
    data["posterior"] = xr.DataTree(posterior)
    return data


def _bfmi(energy: np.ndarray) -> np.ndarray:
    r"""$\mathrm{BFMI} = \sum_t (E_t - E_{t-1})^2 / \sum_t (E_t - \bar E)^2$ per chain."""
    energy = np.asarray(energy, np.float64)
    return np.sum(np.diff(energy, axis=1) ** 2, axis=1) / np.sum(
        (energy - energy.mean(axis=1, keepdims=True)) ** 2, axis=1
    )


def summarize(
    data, *, var_names: Sequence[str] | None = None, rhat_threshold: float = 1.01
) -> dict:
    r"""Convergence summary of fields and scalars in an ArviZ `DataTree`.

    For each posterior variable (default: all): the worst R-hat (rank-normalised split R-hat,
    `arviz.rhat`; ArviZ 1.x returns NaN for a single chain, so run two or more), the smallest
    bulk and tail ESS (`arviz.ess`) over its pixels or entries,
    and the fraction of entries with R-hat above `rhat_threshold`; plus the number of
    divergent transitions and, if the energy was recorded (`extra_fields=("energy",)`), the
    E-BFMI of each chain (values below 0.3 indicate poor exploration of the energy).

    **Returns:** a dict with keys `"variables"` (`{name: {"size", "rhat_max", "ess_bulk_min",
    "ess_tail_min", "frac_rhat_above"}}`), `"num_chains"`, `"num_draws"`, `"divergences"`
    (an int, or `None` if not recorded) and `"bfmi"` (a list per chain, or `None`).
    """
    import arviz as az

    posterior = data["posterior"]
    names = list(posterior.data_vars) if var_names is None else list(var_names)
    for name in names:
        if name not in posterior.data_vars:
            raise ValueError(
                f"`var_names` names {name!r}, not a posterior variable of "
                f"{sorted(posterior.data_vars)}."
            )
    rhat = az.rhat(data, var_names=names)
    bulk = az.ess(data, var_names=names, method="bulk")
    tail = az.ess(data, var_names=names, method="tail")
    variables = {}
    for name in names:
        r = np.asarray(rhat[name].values, np.float64)
        variables[name] = {
            "size": int(r.size),
            "rhat_max": float(np.max(r)),
            "ess_bulk_min": float(np.min(bulk[name].values)),
            "ess_tail_min": float(np.min(tail[name].values)),
            "frac_rhat_above": float(np.mean(r > rhat_threshold)),
        }
    stats = data["sample_stats"] if "sample_stats" in data.children else None
    divergences = None
    bfmi = None
    if stats is not None and "diverging" in stats.data_vars:
        divergences = int(np.sum(stats["diverging"].values))
    if stats is not None and "energy" in stats.data_vars:
        bfmi = [float(b) for b in _bfmi(stats["energy"].values)]
    sizes = posterior.sizes
    return {
        "variables": variables,
        "num_chains": int(sizes["chain"]),
        "num_draws": int(sizes["draw"]),
        "divergences": divergences,
        "bfmi": bfmi,
    }


def format_summary(summary: dict) -> str:
    """A Markdown table of [`summarize`][numpyro_fsdiff.diagnostics.summarize]'s result."""
    lines = [
        f"{summary['num_chains']} chains x {summary['num_draws']} draws; divergences: "
        f"{summary['divergences']}; E-BFMI per chain: "
        + ("n/a" if summary["bfmi"] is None else ", ".join(f"{b:.2f}" for b in summary["bfmi"])),
        "",
        "| variable | entries | max R-hat | min bulk ESS | min tail ESS | frac R-hat > thr |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in summary["variables"].items():
        lines.append(
            f"| {name} | {v['size']} | {v['rhat_max']:.3f} | {v['ess_bulk_min']:.0f} | "
            f"{v['ess_tail_min']:.0f} | {v['frac_rhat_above']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def plot_field_posterior(
    data,
    var_name: str,
    path: str | os.PathLike,
    *,
    truth=None,
    cmap: str = "viridis",
    dpi: int = 100,
) -> Path:
    """Save image panels of a field's posterior mean and standard deviation (and `truth`).

    The figure is written atomically (`numpyro_fsdiff._io.save_figure`): the
    file is complete or absent.

    **Arguments:**

    - `data`: a `DataTree` from [`to_datatree`][numpyro_fsdiff.diagnostics.to_datatree].
    - `var_name`: a posterior field variable with two image axes (no further batch axes).
    - `path`: the output image path (format from the suffix).
    - `truth`: an optional reference field of the same shape, shown first.
    - `cmap`, `dpi`: matplotlib options.

    **Returns:** the path written.
    """
    import matplotlib.pyplot as plt

    posterior = data["posterior"]
    if var_name not in posterior.data_vars:
        raise ValueError(
            f"`var_name` {var_name!r} is not a posterior variable of {sorted(posterior.data_vars)}."
        )
    values = np.asarray(posterior[var_name].values)
    if values.ndim != 4:
        raise ValueError(
            f"`var_name` {var_name!r} must be a field (chain, draw, n1, n2); got shape "
            f"{values.shape}."
        )
    flat = values.reshape((-1,) + values.shape[2:])
    panels = [("posterior mean", flat.mean(0)), ("posterior std", flat.std(0))]
    if truth is not None:
        truth = np.asarray(truth)
        if truth.shape != values.shape[2:]:
            raise ValueError(f"`truth` must have shape {values.shape[2:]}; got {truth.shape}.")
        panels.insert(0, ("truth", truth))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.0), squeeze=False)
    for ax, (title, image) in zip(axes[0], panels):
        im = ax.imshow(image, cmap=cmap, origin="lower")
        ax.set_title(f"{var_name}: {title}")
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    try:
        return save_figure(fig, path, dpi=dpi)
    finally:
        plt.close(fig)


__all__ = [
    "IMAGE_DIMS",
    "default_summaries",
    "format_summary",
    "plot_field_posterior",
    "summarize",
    "to_datatree",
]
