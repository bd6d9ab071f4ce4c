r"""Solver comparison: score evaluations vs wall time vs sample quality, for every sampler.

The exact law of each sampler's output for Gaussian data (the reference of the Gaussian
table) is `numpyro_fsdiff._sampler_spectrum.gaussian_sampler_spectrum`.
"""

import numpy as np

from .._analytic import GaussianScore
from .._sampler_spectrum import gaussian_sampler_spectrum

# ---------------------------------------------------------------------------- the comparison


def _label(config: dict) -> tuple[str, str]:
    method, solver = config.get("method", "sde"), config.get("solver") or "default"
    if "steps" in config and config["steps"] is not None and "rtol" not in config:
        setting = f"{config['steps']} steps"
    else:
        setting = f"rtol={config.get('rtol')}"
    extra = ""
    if method == "pc":
        extra = f", {config.get('corrector_steps', 1)} corr."
    return f"{method} / {solver}", f"{setting}{extra}"


def gaussian_configurations() -> list[dict]:
    """Every sampler at several step counts or tolerances (the Gaussian table)."""
    configs = []
    for solver in ("euler", "heun", "euler_heun", "sra1", "shark", "sea"):
        configs += [dict(method="sde", solver=solver, steps=n) for n in (10, 20, 50, 100, 200)]
    for solver in ("heun", "shark"):
        configs += [dict(method="sde", solver=solver, rtol=tol, atol=tol) for tol in (1e-1, 1e-2)]
    configs += [dict(method="pc", solver="euler", steps=n) for n in (10, 20, 50, 100)]
    for solver in ("euler", "heun", "tsit5", "dopri5"):
        configs += [dict(method="ode", solver=solver, steps=n) for n in (5, 10, 20, 50)]
    for solver in ("tsit5", "dopri5"):
        configs += [
            dict(method="ode", solver=solver, rtol=tol, atol=tol) for tol in (1e-2, 1e-3, 1e-5)
        ]
    return configs


def network_configurations() -> list[dict]:
    """A smaller set for a trained network on a CPU: the 200-step Euler-Maruyama reference
    and cheaper or higher-order alternatives."""
    return [
        dict(method="sde", solver="euler", steps=200),
        dict(method="sde", solver="euler", steps=100),
        dict(method="sde", solver="euler", steps=50),
        dict(method="sde", solver="heun", steps=25),
        dict(method="sde", solver="heun", steps=50),
        dict(method="sde", solver="heun", steps=100),
        dict(method="sde", solver="shark", steps=25),
        dict(method="sde", solver="shark", steps=50),
        dict(method="sde", solver="sra1", steps=50),
        dict(method="pc", solver="euler", steps=50),
        dict(method="pc", solver="euler", steps=100),
        dict(method="ode", solver="heun", steps=25),
        dict(method="ode", solver="heun", steps=50),
        dict(method="ode", solver="tsit5", rtol=1e-3, atol=1e-3),
        dict(method="ode", solver="tsit5", rtol=1e-2, atol=1e-2),
    ]


def compare_solvers(
    score,
    sde,
    grid,
    key,
    *,
    num: int = 256,
    configurations: list[dict] | None = None,
    reference=None,
    data_spectrum=None,
    dataset: str | None = None,
    to_pixels=None,
    repeats: int = 2,
    chunk_size: int | None = 256,
    progress: bool = False,
) -> list[dict]:
    r"""Run samplers and measure cost and quality.

    For each configuration (keyword arguments of [`sample`][numpyro_fsdiff.sample], e.g.
    `dict(method="sde", solver="heun", steps=50)`) it draws `num` samples with the same key,
    times a first call (compilation plus one run) and `repeats` further calls (the median is
    the wall time), and records the mean number of score evaluations per sample and:

    - with `data_spectrum` (Gaussian targets, the eigenvalues $c_k$ of the data covariance):
      the exact $W_2$ between the samples' empirical spectrum and $N(0, C)$
      ([`gaussian_w2`][numpyro_fsdiff.metrics.gaussian_w2]), absolute and relative to
      $\sqrt{\operatorname{tr} C}$;
    - with `reference` (data fields on `grid`, e.g. the test set, in the space of
      `to_pixels(samples)`: pixel intensities if `to_pixels` is given): the energy distance
      ([`energy_distance`][numpyro_fsdiff.metrics.energy_distance], $L^2(D)$ norm) and,
      with `dataset`, the Fréchet classifier distance
      ([`frechet_classifier_distance`][numpyro_fsdiff.metrics.frechet_classifier_distance]).

    **Returns:** one dict per configuration with keys `sampler`, `setting`,
    `score_evaluations`, `wall_s`, `compile_s` and the quality keys (`w2`, `w2_relative`,
    `energy`, `frechet`).
    """
    import time

    import jax
    import jax.numpy as jnp

    from .._sample import sample
    from ..metrics import energy_distance, frechet_classifier_distance, gaussian_w2

    if configurations is None:
        configurations = gaussian_configurations() if data_spectrum is not None else (
            network_configurations()
        )
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"`repeats` must be an int >= 1; got {repeats!r}.")
    reference_pixels = None if reference is None else jnp.asarray(reference)
    rows = []
    for config in configurations:
        def run():
            x, info = sample(score, sde, grid, key=key, num_samples=num, batch_size=chunk_size,
                             **config)
            return jax.block_until_ready(x), info

        start = time.perf_counter()
        x, info = run()
        first = time.perf_counter() - start
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            x, info = run()
            times.append(time.perf_counter() - start)
        wall = float(np.median(times))
        sampler, setting = _label(config)
        row = dict(
            sampler=sampler,
            setting=setting,
            config=dict(config),
            score_evaluations=float(jnp.mean(info.num_score_evaluations)),
            rejected_steps=float(jnp.mean(info.num_rejected_steps)),
            wall_s=wall,
            compile_s=max(first - wall, 0.0),
            finite=bool(jnp.all(jnp.isfinite(x))),
        )
        if data_spectrum is not None:
            w2 = float(gaussian_w2(x, jnp.asarray(data_spectrum, x.dtype), grid))
            row["w2"] = w2
            row["w2_relative"] = w2 / float(np.sqrt(np.sum(data_spectrum)))
        if reference is not None:
            pixels = to_pixels(x) if to_pixels is not None else x
            row["energy"] = float(energy_distance(pixels, reference_pixels, grid=grid))
            if dataset is not None:
                row["frechet"] = frechet_classifier_distance(pixels, reference_pixels,
                                                             dataset=dataset)
        rows.append(row)
        if progress:
            print(_format_row(row), flush=True)
    return rows


_QUALITY = (("w2_relative", "W2 / sqrt(tr C)", "{:.4f}"), ("energy", "energy dist.", "{:.4f}"),
            ("frechet", "Fréchet (classifier)", "{:.3f}"))


def _format_row(row: dict) -> str:
    cells = [row["sampler"], row["setting"], f"{row['score_evaluations']:.1f}",
             f"{row['wall_s']:.3f}", f"{row['compile_s']:.1f}"]
    for key, _, fmt in _QUALITY:
        if key in row:
            cells.append(fmt.format(row[key]))
    return "| " + " | ".join(cells) + " |"


def evaluations_to_match(rows: list[dict], reference: dict, quality: str) -> dict[str, dict]:
    """For each sampler, its cheapest run (in score evaluations) whose `quality` is at least as
    good (as small) as `reference`'s; samplers that never match are left out."""
    best: dict[str, dict] = {}
    for row in rows:
        if quality in row and row[quality] <= reference[quality]:
            name = row["sampler"]
            if name not in best or row["score_evaluations"] < best[name]["score_evaluations"]:
                best[name] = row
    return best


def markdown_table(rows: list[dict], *, title: str = "", notes: str = "") -> str:
    """The comparison as a markdown table (one row per run)."""
    header = ["sampler", "setting", "score evals / sample", "wall s (median)", "compile s"]
    for key, name, _ in _QUALITY:
        if any(key in row for row in rows):
            header.append(name)
    lines = [f"## {title}", ""] if title else []
    if notes:
        lines += [notes, ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [_format_row(row) for row in rows]
    return "\n".join(lines) + "\n"


def plot_comparison(rows: list[dict], path, *, quality: str):
    """Quality against score evaluations and against wall time, one line per sampler."""
    import matplotlib.pyplot as plt

    from .._io import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    names = sorted({row["sampler"] for row in rows})
    for name in names:
        for adaptive in (False, True):
            group = [r for r in rows if r["sampler"] == name and
                     ("rtol" in r["config"]) == adaptive and quality in r]
            if not group:
                continue
            group.sort(key=lambda r: r["score_evaluations"])
            label = name + (" (adaptive)" if adaptive else "")
            style = "--" if adaptive else "-"
            axes[0].plot([r["score_evaluations"] for r in group], [r[quality] for r in group],
                         style, marker="o", label=label)
            axes[1].plot([r["wall_s"] for r in group], [r[quality] for r in group], style,
                         marker="o", label=label)
    for ax, xlabel in zip(axes, ("score evaluations per sample", "wall time (s, median)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(quality)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path


def run_comparison(
    out,
    *,
    checkpoint: str | None = None,
    resolution: int = 28,
    num: int = 256,
    reference_num: int = 2000,
    dataset: str | None = None,
    repeats: int = 2,
    seed: int = 0,
    configurations: list[dict] | None = None,
    progress: bool = True,
) -> tuple[list[dict], str]:
    """`fsdiff bench-solvers`: the comparison on a checkpoint (or, with `checkpoint=None`, on
    the Gaussian target of the docs) at `resolution`; writes `solvers.md`, `solvers.json` and
    `solvers.png` to `out`.

    **Returns:** `(rows, markdown)`.
    """
    import json
    from pathlib import Path

    import jax
    import jax.numpy as jnp

    from .._grid import Grid, resample
    from .._io import write_text

    out = Path(out)
    key = jax.random.key(seed)
    if checkpoint is None:
        from .._sde import VPSDE
        from ..covariance import Matern

        grid = Grid((resolution, resolution))
        sde = VPSDE(Matern(2.0, 3.0))
        data = Matern(1.5, 2.0, 2.0)
        score = GaussianScore(data, sde, grid)
        spectrum = np.asarray(data.eigenvalues(grid), np.float64)
        rows = compare_solvers(score, sde, grid, key, num=num, configurations=configurations,
                               data_spectrum=spectrum, repeats=repeats, progress=progress)
        quality = "w2_relative"
        floor = 1.0 / np.sqrt(4 * num)
        title = f"Gaussian target, {resolution} x {resolution}, {num} samples"
        notes = (
            "Data $N(0, C)$, $C$ = Matern(1.5, 2, 2), noise $Q$ = Matern(2, 3), exact score "
            "(`GaussianScore`), $t_\\varepsilon = 10^{-3}$, Tweedie denoising on. Quality: exact "
            "$W_2$ between the samples' empirical Fourier spectrum and $N(0, C)$, relative to "
            f"$\\sqrt{{\\operatorname{{tr}} C}}$; {num} exact samples give about {floor:.4f}. "
            f"Exact solve (same start and $t_\\varepsilon$): "
            f"{_exact_floor(score):.2e}."
        )
    else:
        from .._checkpoint import load_checkpoint
        from .._pretrained import PRETRAINED, pretrained
        from ..data import load

        ckpt = pretrained(checkpoint) if checkpoint in PRETRAINED else load_checkpoint(checkpoint)
        if dataset is None:
            dataset = checkpoint if checkpoint in PRETRAINED else "mnist"
        grid = ckpt.grid((resolution, resolution))
        test = load(dataset, "test").images[:reference_num]
        reference = np.asarray(test)
        if reference.shape[1:] != grid.shape:
            reference = np.clip(np.asarray(resample(jnp.asarray(reference), grid.shape)), 0, 1)
        rows = compare_solvers(ckpt.model, ckpt.sde, grid, key, num=num,
                               configurations=configurations, reference=reference,
                               dataset=dataset, to_pixels=ckpt.to_pixels, repeats=repeats,
                               progress=progress)
        quality = "frechet"
        title = f"{checkpoint} checkpoint, {resolution} x {resolution}, {num} samples"
        notes = (
            f"Score: the checkpoint's network; quality against the first {reference_num} "
            f"{dataset} test images in pixel space: energy distance ($L^2(D)$ norm) and the "
            "Fréchet distance on the shipped classifier's features."
        )
    reference_row = next((r for r in rows if r["config"] == dict(method="sde", solver="euler",
                                                                  steps=200)), None)
    summary = ""
    if reference_row is not None:
        matches = evaluations_to_match(rows, reference_row, quality)
        lines = [f"Runs that match 200-step Euler-Maruyama ({quality} = "
                 f"{reference_row[quality]:.4g}, {reference_row['score_evaluations']:.0f} "
                 "score evaluations) at the fewest evaluations:", ""]
        for name, row in sorted(matches.items(), key=lambda kv: kv[1]["score_evaluations"]):
            lines.append(f"- {name}, {row['setting']}: {row['score_evaluations']:.0f} "
                         f"evaluations, {quality} = {row[quality]:.4g}")
        summary = "\n".join(lines) + "\n"
    markdown = markdown_table(rows, title=title, notes=notes) + "\n" + summary
    write_text(out / "solvers.md", markdown)
    write_text(out / "solvers.json", json.dumps(rows, indent=1, default=str) + "\n")
    plot_comparison(rows, out / "solvers.png", quality=quality)
    return rows, markdown


def _exact_floor(score: GaussianScore) -> float:
    """Relative W2 between an exact solve's output law and the data law (t_eps and start)."""
    c = np.asarray(score.data_covariance.eigenvalues(score.grid), np.float64)
    exact = gaussian_sampler_spectrum(score, method="sde", denoise=True)
    return float(np.sqrt(np.sum((np.sqrt(exact) - np.sqrt(c)) ** 2) / np.sum(c)))


DESCRIPTION = (
    "Run every sampler at several step counts or tolerances and write a markdown table "
    "(solvers.md), the numbers (solvers.json) and a plot (solvers.png). Without --checkpoint, "
    "the target is Gaussian with the exact score (quality: the exact 2-Wasserstein distance)."
)


def add_arguments(parser) -> None:
    """The flags of `fsdiff bench-solvers` (and of examples/solver_comparison.py)."""
    parser.add_argument("--checkpoint", default=None,
                        help="a pretrained name ('mnist', 'fashion-mnist') or a checkpoint "
                        "folder; without it, the Gaussian target")
    parser.add_argument("--gaussian", action="store_true",
                        help="the Gaussian target with the exact score (the default without "
                        "--checkpoint)")
    parser.add_argument("--resolution", type=int, default=28)
    parser.add_argument("--num", type=int, default=256, help="samples per run")
    parser.add_argument("--reference-num", type=int, default=2000,
                        help="test images used as the reference")
    parser.add_argument("--dataset", default=None, help="dataset of the reference and classifier")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats (median)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench_solvers", help="output folder")


def run_command(args) -> int:
    """`fsdiff bench-solvers`."""
    if args.checkpoint is not None and args.gaussian:
        raise ValueError("give --checkpoint or --gaussian, not both.")
    _, markdown = run_comparison(
        args.out,
        checkpoint=args.checkpoint,
        resolution=args.resolution,
        num=args.num,
        reference_num=args.reference_num,
        dataset=args.dataset,
        repeats=args.repeats,
        seed=args.seed,
    )
    print(markdown)
    return 0
