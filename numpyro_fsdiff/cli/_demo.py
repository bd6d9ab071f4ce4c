"""The main job behind `make demo`: the pretrained MNIST prior, end to end, offline.

1. Sample the pretrained model at 28 x 28, 56 x 56 and 112 x 112 (one set of weights, trained
   on 28 x 28 data: 56 and 112 are zero-shot resolutions), plot the samples' power spectra
   against each other and against Q, and report how they compare (`compare_spectra`).
2. Solve a deblurring and an inpainting problem, observed on the native 28 x 28 grid and posed
   on 56 x 56, with sequential Monte Carlo along the reverse diffusion (`inverse.SMC`); panels,
   coverage, ESS and log-evidence.
3. A small solver comparison (three solvers, two step counts) against the shipped test images.
4. `report.md`, linking everything, with the measured numbers.

Every file is written atomically, so an interrupted demo leaves no half-written output.
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo's steps; the defaults fit in 10 minutes on 2 CPU cores."""

    sample_resolutions: tuple[int, ...] = (28, 56, 112)
    num_samples: int = 32
    sample_steps: int = 100  # reverse-SDE Euler-Maruyama steps
    # Observed on the native 28 x 28 grid, inverted zero-shot on 56 x 56 by SMC.
    inverse_resolution: int = 56
    inverse_tasks: tuple[str, ...] = ("deblur", "inpaint")
    # 160 particles with 2 MALA moves per step cost what 512 without moves cost, and gave
    # 1.1-1.6 dB more on images 0-4 (lower coverage on inpainting; docs/smc.md,
    # Resample-move).
    smc_particles: int = 160
    smc_steps: int = 50
    smc_moves: int = 2
    smc_islands: int | None = None  # None: islands of about 8, as `fsdiff invert` (20 here)
    smc_twist_variance: float | None = None  # None: `fsdiff invert`'s kappa
    smc_twist_crossover: float | None = None  # None: `fsdiff invert`'s
    comparison_resolution: int = 28
    comparison_num: int = 64
    comparison_steps: tuple[int, int] = (25, 100)
    seed: int = 0


SMALL = DemoSettings(sample_resolutions=(12, 16), num_samples=4, sample_steps=4,
                     inverse_resolution=12, smc_particles=8, smc_steps=3, smc_moves=1,
                     smc_islands=2,
                     comparison_resolution=12, comparison_num=8,
                     comparison_steps=(2, 4))
"""A tiny configuration for the test suite: same code path, seconds instead of minutes."""


def _sample_grids(ckpt, settings: DemoSettings, out: Path, progress) -> tuple[list, dict]:
    import jax
    import matplotlib.pyplot as plt

    from .._io import save_figure
    from .._sample import sample

    rows, fields = [], {}
    for n in settings.sample_resolutions:
        grid = ckpt.grid((n, n))
        key = jax.random.key(settings.seed)
        start = time.perf_counter()
        x, info = sample(ckpt.model, ckpt.sde, grid, key=key, num_samples=settings.num_samples,
                         method="sde", solver="euler", steps=settings.sample_steps)
        x = jax.block_until_ready(x)
        wall = time.perf_counter() - start
        fields[n] = np.asarray(x)
        pixels = np.asarray(ckpt.to_pixels(x))
        side = int(np.ceil(np.sqrt(settings.num_samples)))
        fig, axes = plt.subplots(side, side, figsize=(1.2 * side, 1.2 * side))
        for ax, image in zip(np.ravel(axes), list(pixels) + [None] * (side * side)):
            ax.axis("off")
            if image is not None:
                ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        fig.suptitle(f"{n} x {n}", fontsize=9)
        save_figure(fig, out / f"samples_{n}.png", dpi=100)
        plt.close(fig)
        rows.append(dict(resolution=n, seconds=wall,
                         score_evaluations=float(np.mean(info.num_score_evaluations)),
                         pixel_mean=float(pixels.mean()), finite=bool(np.isfinite(x).all()),
                         file=f"samples_{n}.png"))
        progress.update()
    return rows, fields


def _spectra(ckpt, fields: dict, out: Path, steps: int) -> dict:
    """The samples' radially averaged power spectra on one plot, against Q's, and
    `compare_spectra` of the finer grids against the coarsest (band: the model's cutoff, at
    most what the coarsest grid holds in both signs), the new shells also against the law
    that `steps` Euler-Maruyama steps give them."""
    import matplotlib.pyplot as plt

    from .._io import save_figure
    from .._sampler_spectrum import euler_maruyama_reference_factor
    from .._spectrum import compare_spectra_and_sampler_law, plot_power_spectra

    coarsest = min(fields)
    cutoff = min(ckpt.model.cutoff or coarsest, coarsest // 2 - 1)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    plot_power_spectra({f"{n} x {n}": x for n, x in sorted(fields.items())},
                       covariance=ckpt.covariance, cutoff=cutoff, ax=ax)
    ax.set_title(f"power spectra of the samples (cutoff K = {cutoff})", fontsize=9)
    save_figure(fig, out / "spectra.png", dpi=110)
    plt.close(fig)
    factor = euler_maruyama_reference_factor(ckpt.sde, steps)
    grids = compare_spectra_and_sampler_law(fields, ckpt.covariance, cutoff, factor)
    return dict(cutoff=cutoff, coarsest=coarsest, file="spectra.png", sampler_factor=factor,
                grids=grids)


def _islands(settings: DemoSettings) -> int:
    """The demo's SMC islands: its own setting, else `fsdiff invert`'s default."""
    from ._invert import default_islands

    if settings.smc_islands is None:
        return default_islands(settings.smc_particles)
    return settings.smc_islands


def _twist(settings: DemoSettings) -> tuple[float, float]:
    """The demo's SMC twist variance and crossover: its own settings, else `fsdiff
    invert`'s defaults."""
    from ._invert import SMC_DEFAULTS

    return tuple(
        SMC_DEFAULTS[name] if value is None else value
        for name, value in (("twist_variance", settings.smc_twist_variance),
                            ("twist_crossover", settings.smc_twist_crossover))
    )


def _inverse_problems(settings: DemoSettings, out: Path, progress) -> list[dict]:
    from ._tasks import run_task

    reports = []
    twist_variance, twist_crossover = _twist(settings)
    for task in settings.inverse_tasks:
        start = time.perf_counter()
        report = run_task(task=task, checkpoint="mnist", resolution=settings.inverse_resolution,
                          sampler="smc", num_samples=settings.smc_particles,
                          steps=settings.smc_steps, move_steps=settings.smc_moves,
                          num_islands=_islands(settings),
                          twist_variance=twist_variance, twist_crossover=twist_crossover,
                          seed=settings.seed, out=out)
        report["demo_wall_s"] = time.perf_counter() - start
        reports.append(report)
        progress.update()
    return reports


def _solver_comparison(ckpt, settings: DemoSettings, out: Path, progress) -> tuple[list, str]:
    import jax
    import jax.numpy as jnp

    from .._grid import resample
    from .._io import write_text
    from ..data import load_subset
    from ._solver_comparison import compare_solvers, markdown_table

    grid = ckpt.grid((settings.comparison_resolution,) * 2)
    reference = np.asarray(load_subset().images[:1000])
    if reference.shape[1:] != grid.shape:
        reference = np.clip(np.asarray(resample(jnp.asarray(reference), grid.shape)), 0, 1)
    few, many = settings.comparison_steps
    configurations = [dict(method=m, solver=s, steps=k)
                      for m, s in (("sde", "euler"), ("sde", "shark"), ("ode", "heun"))
                      for k in (few, many)]
    rows = compare_solvers(ckpt.model, ckpt.sde, grid, jax.random.key(settings.seed),
                           num=settings.comparison_num, configurations=configurations,
                           reference=reference, dataset="mnist", to_pixels=ckpt.to_pixels,
                           repeats=1)
    table = markdown_table(
        rows, title=f"Solvers on the pretrained MNIST model, {grid.shape[0]} x {grid.shape[1]}, "
        f"{settings.comparison_num} samples",
        notes="Quality against the first 1,000 shipped MNIST test images, in pixel space.")
    write_text(out / "solvers.md", table)
    progress.update()
    return rows, table


def _report(samples, spectra, inverse, table, total, settings, cutoff_note) -> str:
    nan = float("nan")
    twist_variance, twist_crossover = _twist(settings)
    lines = ["# numpyro_fsdiff demo report", "",
             f"Pretrained MNIST FNO prior, offline. Total wall time {total:.0f} s "
             "(compilation included).", "", "## 1. Samples at three resolutions", "",
             f"Trained on 28 x 28 data; finer grids are zero-shot. {cutoff_note} Reverse SDE, "
             f"Euler-Maruyama, {settings.sample_steps} steps, Tweedie denoising, "
             f"{settings.num_samples} samples per grid.", "",
             "| grid | score evaluations / sample | wall s | mean pixel | finite | file |",
             "|---|---|---|---|---|---|"]
    for r in samples:
        lines.append(f"| {r['resolution']} x {r['resolution']} | {r['score_evaluations']:.0f} | "
                     f"{r['seconds']:.1f} | {r['pixel_mean']:.3f} | {r['finite']} | "
                     f"![samples]({r['file']}) |")
    k, c = spectra["cutoff"], spectra["coarsest"]
    lines += ["", f"**Power spectra** ([{spectra['file']}]({spectra['file']})). Shared shells "
              f"1..{k} against the {c} x {c} samples; new shells (wholly outside the box "
              f"|k_i| <= {k}) against N(0, Q): a measure on functions gives ratios near 1 on "
              "both (z: the difference over its standard error from the sample size; medians "
              "over shells). `std above K`: the fields' part above the cutoff, in model units. "
              f"The sampler's own law on the new shells is {spectra['sampler_factor']:.4f} Q, "
              f"not Q: {settings.sample_steps} Euler-Maruyama steps inflate the variance of a "
              "mode whose score is exactly -x (the exact recursion of the chain); the last two "
              "columns compare with that.",
              "", "| grid | shared: median ratio | shared: median abs z | new: median ratio to Q "
              "| new: median abs z | std above K | new: ratio to the sampler's law "
              "| new: its median abs z |", "|---|---|---|---|---|---|---|---|"]
    for n, g in spectra["grids"].items():
        lines.append(f"| {n} x {n} | {g['shared_ratio_median']:.3f} | "
                     f"{g['shared_abs_z_median']:.2f} | {g['new_ratio_median']:.3f} | "
                     f"{g['new_abs_z_median']:.2f} | {g['high_std']:.4f} | "
                     f"{g['new_ratio_median_sampler']:.4f} | "
                     f"{g['new_abs_z_median_sampler']:.2f} |")
    lines += ["", f"![spectra]({spectra['file']})", "",
              f"## 2. Inverse problems at {settings.inverse_resolution} x "
              f"{settings.inverse_resolution} (SMC)", "",
              f"Observed on the native 28 x 28 grid, inverted on {settings.inverse_resolution} x "
              f"{settings.inverse_resolution} with `inverse.SMC`: {settings.smc_particles} "
              f"particles in {_islands(settings)} independent islands of "
              f"{settings.smc_particles // _islands(settings)}, along {settings.smc_steps} "
              "reverse-SDE steps, twisted by the likelihood of the denoised estimate (twist "
              f"variance {twist_variance}, crossover {twist_crossover}), adaptive "
              f"resampling within each island, and {settings.smc_moves} MALA moves per particle "
              "before each step (resample-move). The posterior's mean, std and 90% coverage use "
              "the particles' weights (the islands pooled with equal weight). One population "
              "collapses onto one lineage at mid-diffusion and then underestimates the spread; "
              "the islands keep at least one lineage each (distinct ancestors below).", "",
              "| task | PSNR | SSIM | 90% coverage | final ESS | min ESS | distinct ancestors "
              "| resamplings | move acceptance | log-evidence | score evaluations | wall s "
              "| panel |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in inverse:
        m, d, i = r["metrics"], r["diagnostics"], r["info"]
        acceptance = nan if d.get("move_acceptance") is None else d["move_acceptance"]
        stem = f"{r['task']}_smc_{r['dataset']}_{r['resolution']}"
        lines.append(
            f"| {r['task']} | {m.get('psnr', nan):.2f} | {m.get('ssim', nan):.3f}"
            f" | {m.get('coverage_90', nan):.3f} | {d.get('final_ess', nan):.1f}"
            f" | {d.get('min_ess', nan):.1f} | {d.get('num_distinct_ancestors', 'n/a')}"
            f" | {d.get('num_resamplings', 'n/a')} | {acceptance:.2f}"
            f" | {d.get('log_evidence', nan):.1f}"
            f" | {i.get('score_evaluations', nan):.0f} | {r['demo_wall_s']:.0f} | "
            f"[{stem}.png]({stem}.png) |")
    naive = [r for r in inverse if "naive_inverse" in r]
    if naive:
        lines += ["", "Naive inverse (regularised pseudo-inverse) PSNR for comparison: " +
                  ", ".join(f"{r['task']} {r['naive_inverse']['psnr']:.2f}" for r in naive) + "."]
    lines += ["", "## 3. Solver comparison", "", table, "",
              "Files: samples_*.png, spectra.png, *_smc_*.png / .json (panels and full reports), "
              "solvers.md, report.json."]
    return "\n".join(lines) + "\n"


def run(out: str | Path = "demo_out", settings: DemoSettings = DemoSettings(),
        progress: bool = True) -> Path:
    """Run the demo and write its files into `out`; returns the path of `report.md`."""
    from tqdm import tqdm

    from .._io import write_text
    from .._pretrained import pretrained

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    ckpt = pretrained("mnist")
    bar = tqdm(total=len(settings.sample_resolutions) + 3, desc="demo", disable=not progress)
    samples, fields = _sample_grids(ckpt, settings, out, bar)
    spectra = _spectra(ckpt, fields, out, settings.sample_steps)
    inverse = _inverse_problems(settings, out, bar)
    rows, table = _solver_comparison(ckpt, settings, out, bar)
    bar.close()
    total = time.perf_counter() - start
    write_text(out / "report.json", json.dumps(dict(samples=samples, spectra=spectra,
                                                    inverse=inverse, solvers=rows, wall_s=total),
                                               indent=1, default=str) + "\n")
    if ckpt.model.cutoff is not None:
        cutoff_note = (f"Band-limited construction: above the cutoff K = {ckpt.model.cutoff} the "
                       "score is exactly -x, so a finer grid adds modes distributed as N(0, Q) "
                       "(docs/theory.md).")
    else:
        cutoff_note = "A network without a cutoff: every mode a finer grid adds is learned."
    report = out / "report.md"
    write_text(report, _report(samples, spectra, inverse, table, total, settings, cutoff_note))
    return report
