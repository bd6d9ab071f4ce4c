"""The main job behind `make demo`: the pretrained MNIST prior, end to end, offline.

1. Sample the pretrained model at 28 x 28, 56 x 56 and 112 x 112 (one set of weights, trained
   at 14 and 28: 56 and 112 are zero-shot resolutions).
2. Solve a deblurring and an inpainting problem, observed on the native 28 x 28 grid and posed
   on 56 x 56, with NUTS in the Gaussian latent of the probability-flow prior; panels and the
   ArviZ summary.
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
    num_samples: int = 16
    sample_steps: int = 100  # reverse-SDE Euler-Maruyama steps
    # Observed on the native 28 x 28 grid, inverted zero-shot on 56 x 56.
    # NUTS through the flow costs about 0.25 s per gradient of two chains at 56 x 56 here, so
    # the chains are short (30 + 20 draws, tree depth <= 3) and start from MAP-like points;
    # R-hat and ESS in the report say how far from converged they are.
    inverse_resolution: int = 56
    inverse_tasks: tuple[str, ...] = ("deblur", "inpaint")
    nuts_warmup: int = 30
    nuts_samples: int = 20
    nuts_chains: int = 2
    nuts_tree_depth: int = 3
    nuts_init_steps: int = 50  # Adam steps from a prior draw to each chain's start
    ode_solver: str = "euler"  # Heun/Tsit5 with few steps blow up at t_eps (see run_task)
    ode_steps: int = 6
    comparison_resolution: int = 28
    comparison_num: int = 64
    comparison_steps: tuple[int, int] = (25, 100)
    seed: int = 0


SMALL = DemoSettings(sample_resolutions=(12, 16), num_samples=2, sample_steps=4,
                     inverse_resolution=12, nuts_warmup=3, nuts_samples=3, nuts_chains=1,
                     nuts_tree_depth=3, nuts_init_steps=3, ode_steps=2,
                     comparison_resolution=12, comparison_num=8,
                     comparison_steps=(2, 4))
"""A tiny configuration for the test suite: same code path, seconds instead of minutes."""


def _sample_grids(ckpt, settings: DemoSettings, out: Path, progress) -> list[dict]:
    import jax
    import matplotlib.pyplot as plt

    from .._io import save_figure
    from .._sample import sample

    rows = []
    for n in settings.sample_resolutions:
        grid = ckpt.grid((n, n))
        key = jax.random.key(settings.seed)
        start = time.perf_counter()
        x, info = sample(ckpt.model, ckpt.sde, grid, key=key, num_samples=settings.num_samples,
                         method="sde", solver="euler", steps=settings.sample_steps)
        x = jax.block_until_ready(x)
        wall = time.perf_counter() - start
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
    return rows


def _inverse_problems(settings: DemoSettings, out: Path, progress) -> list[dict]:
    from ._tasks import run_task

    reports = []
    for task in settings.inverse_tasks:
        start = time.perf_counter()
        report = run_task(task=task, checkpoint="mnist", resolution=settings.inverse_resolution,
                          sampler="nuts", num_samples=settings.nuts_samples,
                          num_warmup=settings.nuts_warmup, num_chains=settings.nuts_chains,
                          ode_steps=settings.ode_steps, ode_solver=settings.ode_solver,
                          max_tree_depth=settings.nuts_tree_depth,
                          init_steps=settings.nuts_init_steps, seed=settings.seed, out=out)
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


def _report(samples, inverse, table, total, settings) -> str:
    lines = ["# numpyro_fsdiff demo report", "",
             f"Pretrained MNIST FNO prior, offline. Total wall time {total:.0f} s "
             "(compilation included).", "", "## 1. Samples at three resolutions", "",
             "Trained at 14 x 14 and 28 x 28; 56 and 112 are zero-shot. Reverse SDE, "
             f"Euler-Maruyama, {settings.sample_steps} steps, Tweedie denoising.", "",
             "| grid | score evaluations / sample | wall s | mean pixel | finite | file |",
             "|---|---|---|---|---|---|"]
    for r in samples:
        lines.append(f"| {r['resolution']} x {r['resolution']} | {r['score_evaluations']:.0f} | "
                     f"{r['seconds']:.1f} | {r['pixel_mean']:.3f} | {r['finite']} | "
                     f"![samples]({r['file']}) |")
    lines += ["", f"## 2. Inverse problems at {settings.inverse_resolution} x "
              f"{settings.inverse_resolution} (NUTS in the latent)", "",
              f"Observed on the native 28 x 28 grid, inverted on {settings.inverse_resolution} x "
              f"{settings.inverse_resolution}. Prior: the probability-flow map of the model "
              f"({settings.ode_solver}, {settings.ode_steps} steps) on N(0, Q); NUTS "
              f"{settings.nuts_chains} chains x ({settings.nuts_warmup} warm-up + "
              f"{settings.nuts_samples} draws), tree depth <= {settings.nuts_tree_depth}, "
              f"each chain started from a prior draw after {settings.nuts_init_steps} Adam "
              "steps, with the linearised posterior as the mass matrix. A demo-sized run: "
              "R-hat (over pixels) and ESS say how far from converged it is; R-hat well above "
              "1.01 means the chains have not mixed and the coverage is not to be trusted.", "",
              "| task | PSNR | SSIM | 90% coverage | R-hat max / median | ESS bulk min / median "
              "| step size | leapfrog steps | divergences | score evaluations | wall s | panel |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    nan = float("nan")
    for r in inverse:
        m, d, i = r["metrics"], r["diagnostics"], r["info"]
        stem = f"{r['task']}_nuts_{r['dataset']}_{r['resolution']}"
        lines.append(
            f"| {r['task']} | {m.get('psnr', float('nan')):.2f} | {m.get('ssim', float('nan')):.3f}"
            f" | {m.get('coverage_90', float('nan')):.3f} | {d.get('rhat_max', float('nan')):.3f}"
            f" / {d.get('rhat_median', nan):.3f}"
            f" | {d.get('ess_bulk_min', nan):.1f} / {d.get('ess_bulk_median', nan):.1f}"
            f" | {d.get('step_size', nan):.3g} | {d.get('mean_leapfrog_steps', nan):.1f}"
            f" | {d.get('divergences', 'n/a')} | "
            f"{i.get('score_evaluations', float('nan')):.0f} | {r['demo_wall_s']:.0f} | "
            f"[{stem}.png]({stem}.png) |")
    naive = [r for r in inverse if "naive_inverse" in r]
    if naive:
        lines += ["", "Naive inverse (regularised pseudo-inverse) PSNR for comparison: " +
                  ", ".join(f"{r['task']} {r['naive_inverse']['psnr']:.2f}" for r in naive) + "."]
    lines += ["", "## 3. Solver comparison", "", table, "",
              "Files: samples_*.png, *_nuts_*.png / .json (panels and full reports with the "
              "ArviZ diagnostics), solvers.md, report.json."]
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
    samples = _sample_grids(ckpt, settings, out, bar)
    inverse = _inverse_problems(settings, out, bar)
    rows, table = _solver_comparison(ckpt, settings, out, bar)
    bar.close()
    total = time.perf_counter() - start
    write_text(out / "report.json", json.dumps(dict(samples=samples, inverse=inverse,
                                                    solvers=rows, wall_s=total),
                                               indent=1, default=str) + "\n")
    report = out / "report.md"
    write_text(report, _report(samples, inverse, table, total, settings))
    return report
