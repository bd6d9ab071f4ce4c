"""`fsdiff train` and `fsdiff data fetch`: train on MNIST-like data and write a run folder.

`fsdiff train --out DIR` refuses a folder that already holds a run unless `--resume` (continue
it) or `--overwrite` (start again from step 0) says what to do with it; Ctrl-C checkpoints the
current step and prints the command that resumes it; a run that fails leaves no empty folder
behind.

A run folder holds the checkpoint (`checkpoint.json`, `model-*.eqx`, `state-*.eqx`), `log.txt`
(written by the caller's shell), `loss.png` (the training and held-out loss) and
`samples.png` (a grid of samples from a fixed-step reverse-SDE Euler-Maruyama solve with
`numpyro_fsdiff.sample`, followed by Tweedie's denoising step).
"""

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .. import covariance as cov
from .._checkpoint import load_checkpoint, update_record
from .._grid import Grid
from .._io import save_figure, write_text
from .._sample import sample
from .._sde import VPSDE
from .._sharding import data_mesh
from .._training import TrainingInterrupted, heldout_loss, train

COVARIANCES = {"matern": cov.Matern, "laplacian": cov.LaplacianPower, "white": cov.WhiteNoise}


def parse_levels(text: str) -> list[tuple[int, int]]:
    """`"14:2000,28:1000"` -> `[(14, 2000), (28, 1000)]`; the argparse type of `--levels`."""
    levels = []
    for part in text.split(","):
        try:
            resolution, steps = (int(v) for v in part.split(":"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must look like 14:2000,28:1000 (resolution:steps,...); got {text!r}"
            ) from None
        if resolution < 2 or steps < 1:
            where = "" if part == text else f" in {text!r}"
            raise argparse.ArgumentTypeError(
                f"each resolution:steps needs a resolution >= 2 and steps >= 1; got {part!r}"
                + where
            )
        levels.append((resolution, steps))
    return levels


def parse_covariance(text: str, grid: Grid) -> tuple[cov.AbstractCovariance, dict]:
    """`"matern:alpha=1.5,tau=10"` -> the operator; without `scale`, it is chosen so that
    $\\operatorname{tr}(Q)/|D| = 1$ on `grid` (pixel variance one in model space)."""
    name, _, rest = text.partition(":")
    if name not in COVARIANCES:
        raise ValueError(
            f"`--covariance` must start with one of {sorted(COVARIANCES)}; got {text!r}."
        )
    params = {}
    for item in filter(None, rest.split(",")):
        k, eq, v = item.partition("=")
        if not eq:
            raise ValueError(
                f"`--covariance` parameters must be key=value; got {item!r} in {text!r}."
            )
        try:
            params[k.strip()] = float(v)
        except ValueError:
            raise ValueError(
                f"`--covariance` parameter {k.strip()!r} must be a number; got {v!r} in {text!r}."
            ) from None
    cls = COVARIANCES[name]
    try:
        unit = cls(**{**params, "scale": params.get("scale", 1.0)})
    except TypeError as err:
        raise ValueError(f"`--covariance` {text!r}: {err}.") from None
    info = {"spec": text, "normalised_on": None}
    if "scale" not in params:
        variance = float(unit.trace(grid)) / grid.area
        params["scale"] = 1.0 / np.sqrt(variance)
        info["normalised_on"] = list(grid.shape)
    return cls(**params), info


def plot_loss(history: list, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    train_rows = [h for h in history if "loss" in h]
    for level in sorted({h["level"] for h in train_rows}):
        rows = [h for h in train_rows if h["level"] == level]
        res = "x".join(map(str, rows[0]["resolution"]))
        ax.plot([h["step"] for h in rows], [h["loss"] for h in rows], lw=1, label=f"train {res}")
    held = [h for h in history if "heldout_loss" in h]
    if held:
        res = "x".join(map(str, held[0]["heldout_shape"]))
        ax.plot(
            [h["step"] for h in held],
            [h["heldout_loss"] for h in held],
            "ko-",
            ms=3,
            label=f"held-out {res} (EMA)",
        )
    ax.set_xlabel("step")
    ax.set_ylabel(r"DSM loss $\|\epsilon_\theta - \eta\|^2_{L^2(D)}$")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def plot_samples(panels: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.8), squeeze=False)
    for ax, (title, images) in zip(axes[0], panels.items()):
        images = np.asarray(images)
        num, n1, n2 = images.shape
        cols = int(np.ceil(np.sqrt(num)))
        rows = int(np.ceil(num / cols))
        canvas = np.ones((rows * (n1 + 1) - 1, cols * (n2 + 1) - 1))
        for i, img in enumerate(images):
            r, c = divmod(i, cols)
            canvas[r * (n1 + 1) : r * (n1 + 1) + n1, c * (n2 + 1) : c * (n2 + 1) + n2] = img
        ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def evaluate_run(
    out: Path, heldout: np.ndarray, resolutions=(14, 28, 56), repeats: int = 4, seed: int = 0
) -> dict:
    """Held-out DSM loss of the saved (EMA) model at each resolution; written to the JSON."""
    ckpt = load_checkpoint(out)
    losses = {}
    for n in resolutions:
        losses[str(n)] = heldout_loss(
            ckpt.network,
            ckpt.sde,
            heldout,
            shape=(n, n),
            repeats=repeats,
            key=jax.random.key(seed + 12345),
            lengths=ckpt.lengths,
        )
    metrics = dict(ckpt.config.get("metrics", {}))
    metrics["heldout_dsm_loss"] = losses
    metrics["heldout_num"] = int(heldout.shape[0])
    metrics["heldout_repeats"] = repeats
    update_record(out, metrics=metrics)
    return losses


def _mesh(devices: int | None):
    """A data mesh of the first `devices` devices, or `None`."""
    if devices is None:
        return None
    available = jax.devices()
    if not 1 <= devices <= len(available):
        raise ValueError(
            f"`--devices` must be between 1 and the {len(available)} devices of JAX's "
            f"{jax.default_backend()} backend; got {devices}."
        )
    return data_mesh(available[:devices])


DESCRIPTION = (
    "Train an FNO score coarse to fine (--levels) on MNIST, Fashion-MNIST or the shipped "
    "MNIST subset, and write a run folder: checkpoint, loss.png, samples.png, summary.json."
)


def _existing_run(out: Path) -> int | None:
    """The step of the run in `out`, or `None` when `out` holds no run."""
    from .._checkpoint import read_config

    if not (out / "checkpoint.json").exists():
        return None
    try:
        return int(read_config(out).get("step", 0))
    except (ValueError, OSError, TypeError):
        return 0


def _resume_command(argv: str) -> str:
    """The recorded command line with `--resume` (and without `--overwrite`)."""
    words = [w for w in shlex.split(argv) if w != "--overwrite"]
    if "--resume" not in words:
        words.append("--resume")
    return shlex.join(words)


def _remove_empty_folders(out: Path, top: Path | None) -> None:
    """Remove `out` and its parents up to `top` (the first folder this run created), as long
    as they are empty."""
    if top is None:
        return
    folder = out
    while True:
        try:
            folder.rmdir()  # only succeeds on an empty folder
        except OSError:
            return
        if folder == top:
            return
        folder = folder.parent


def run_train(args) -> int:
    """`fsdiff train`: refuse an existing run without --resume/--overwrite, train, report."""
    out = Path(args.out)
    step = _existing_run(out)
    if step is not None and not (args.resume or args.overwrite):
        raise FileExistsError(
            f"--out {args.out} already holds a training run (step {step}); pass --resume to "
            "continue it, or --overwrite to start again from step 0 and replace it."
        )
    # The first folder on the way to `out` that does not exist yet: removed again on failure.
    created = next((p for p in [*reversed(out.parents), out] if not p.exists()), None)
    try:
        return _train(args, out)
    except TrainingInterrupted as stop:
        if stop.checkpoint_dir is None:
            print(f"fsdiff: interrupted at step {stop.step}; no checkpoint was written",
                  file=sys.stderr)
        else:
            print(f"fsdiff: interrupted at step {stop.step}; checkpoint saved in "
                  f"{stop.checkpoint_dir}; resume with: {_resume_command(args.argv)}",
                  file=sys.stderr)
        return 130
    finally:
        _remove_empty_folders(out, created)


def _train(args, out: Path) -> int:
    from ..data import PixelScaling, load, load_subset
    from ..nn import FNO

    out.mkdir(parents=True, exist_ok=True)
    levels = args.levels
    finest = Grid((levels[-1][0], levels[-1][0]))
    init = None
    if args.init is not None:
        # Continue from the (EMA) weights, SDE and scaling of an earlier run: a new run with
        # its own optimiser and schedule, e.g. a finer level after a stopped coarse run.
        init = load_checkpoint(args.init)
        sde, scaling, covariance = init.sde, init.scaling, init.covariance
        cov_info = dict(init.config.get("metadata", {}).get("covariance", {}), init=str(args.init))
    else:
        covariance, cov_info = parse_covariance(args.covariance, finest)
        sde = VPSDE(
            covariance,
            beta_min=args.beta_min,
            beta_max=args.beta_max,
            allow_non_trace_class=isinstance(covariance, cov.WhiteNoise),
        )
        scaling = PixelScaling()
    if args.dataset == "mnist-subset":
        pixels = load_subset().images
        train_pixels, heldout_pixels = pixels[:1500], pixels[1500:]
    else:
        train_pixels = load(args.dataset, "train", args.root, download=args.download).images
        heldout_pixels = load(args.dataset, "test", args.root, download=args.download).images
    if args.num_train is not None:
        train_pixels = train_pixels[: args.num_train]
    heldout_pixels = heldout_pixels[: args.num_heldout]
    x_train = np.asarray(scaling.from_pixels(jnp.asarray(train_pixels)))
    x_heldout = np.asarray(scaling.from_pixels(jnp.asarray(heldout_pixels)))
    if init is not None:
        network = init.network
    else:
        network = FNO(
            modes=args.modes,
            width=args.width,
            depth=args.depth,
            projection_dim=args.projection_dim,
            embedding_dim=args.embedding_dim,
            key=jax.random.key(args.seed),
        )
    command = args.argv
    metadata = dict(
        command=command,
        dataset=args.dataset,
        num_train=int(x_train.shape[0]),
        covariance=cov_info,
        jax_backend=jax.default_backend(),
        init_from=None
        if init is None
        else dict(
            path=str(args.init),
            step=init.config["step"],
            command=init.config.get("metadata", {}).get("command"),
            wall_time=init.config.get("wall_time"),
            levels=init.config.get("training", {}).get("levels"),
        ),
        started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    print(
        f"training {network.config} on {x_train.shape} ({args.dataset}); Q = {covariance}; "
        f"tr(Q)/|D| on {finest.shape} = {float(covariance.trace(finest)) / finest.area:.4f}",
        flush=True,
    )
    result = train(
        network,
        sde,
        x_train,
        levels,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_steps=args.warmup,
        weight_decay=args.weight_decay,
        clip_norm=args.clip,
        ema_decay=args.ema,
        lr_schedule=args.lr_schedule,
        resampling=args.method,
        key=jax.random.key(args.seed),
        checkpoint_dir=out,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        scaling=scaling,
        eval_data=x_heldout[: args.num_eval],
        eval_every=args.eval_every,
        log_every=args.log_every,
        progress=not args.no_progress,
        metadata=metadata,
        mesh=_mesh(args.devices),
    )
    print(f"trained {result.step} steps in {result.wall_time:.1f} s", flush=True)
    plot_loss(result.history, out / "loss.png")
    losses = evaluate_run(out, x_heldout, seed=args.seed)
    print("held-out DSM loss (EMA weights): " + json.dumps(losses), flush=True)
    if args.samples > 0:
        ckpt = load_checkpoint(out)
        panels = {}
        tick = time.perf_counter()
        for n in (levels[-1][0], 2 * levels[-1][0]):
            grid = ckpt.grid((n, n))
            num = args.samples if n == levels[-1][0] else max(1, args.samples // 4)
            # The library's sampler: its noise is keyed by step index, so the same seed gives
            # the same samples alone, batched or sharded.
            x, _ = sample(ckpt.model, ckpt.sde, grid, key=jax.random.key(args.seed + 7),
                          num_samples=num, solver="euler", steps=args.sample_steps)
            panels[f"{n}x{n} (reverse SDE, {args.sample_steps} Euler steps)"] = ckpt.to_pixels(x)
        plot_samples(panels, out / "samples.png")
        print(f"samples written in {time.perf_counter() - tick:.1f} s", flush=True)
    write_text(
        out / "summary.json",
        json.dumps(
            dict(
                steps=result.step,
                wall_time_s=result.wall_time,
                heldout_dsm_loss=losses,
                command=command,
            ),
            indent=1,
        )
        + "\n",
    )
    return 0


def run_fetch(args) -> int:
    from ..data import DATASETS, download

    names = DATASETS if args.dataset == "all" else (args.dataset,)
    for name in names:
        folder = download(name, None, args.root)
        print(f"{name}: verified files in {folder}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `fsdiff train` (and of examples/multilevel_mnist.py, with other defaults)."""
    p.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist", "mnist-subset"])
    p.add_argument(
        "--levels",
        default="14:2000,28:1000",
        type=parse_levels,
        help="coarse-to-fine levels resolution:steps,...",
    )
    p.add_argument(
        "--covariance",
        default="matern:alpha=1.5,tau=10",
        help="name:key=value,... (matern, laplacian, white); without scale, the "
        "scale makes tr(Q)/|D| = 1 on the finest grid",
    )
    p.add_argument("--out", required=True, help="the run folder")
    p.add_argument("--root", default=None, help="data folder to look in first")
    p.add_argument("--download", action="store_true", help="download the data if missing")
    p.add_argument("--beta-min", type=float, default=0.1)
    p.add_argument("--beta-max", type=float, default=20.0)
    p.add_argument("--modes", type=int, default=10)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--projection-dim", type=int, default=64)
    p.add_argument("--embedding-dim", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument(
        "--lr-schedule",
        default="global",
        choices=["global", "per-level"],
        help="one warm-up + cosine over all levels (global), or restarted at each level",
    )
    p.add_argument("--method", default="spectral", choices=["spectral", "area"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-train", type=int, default=None, help="use only the first N images")
    p.add_argument("--num-heldout", type=int, default=1000, help="test images for the metrics")
    p.add_argument("--num-eval", type=int, default=500, help="test images for the loss curve")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=50)
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--resume", action="store_true", help="continue the run in --out")
    existing.add_argument("--overwrite", action="store_true",
                          help="replace the run in --out, starting again from step 0")
    p.add_argument(
        "--init",
        default=None,
        help="start from the weights, SDE and scaling of "
        "this checkpoint (a new run; the architecture and --covariance are ignored)",
    )
    p.add_argument("--samples", type=int, default=64, help="samples in samples.png (0: none)")
    p.add_argument("--sample-steps", type=int, default=200)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--devices",
        type=int,
        default=None,
        help="data-parallel training on the first N of jax.devices() (the batch is split "
        "across them; --batch-size must be a multiple of N)",
    )


def add_data_parser(commands) -> list[argparse.ArgumentParser]:
    """`fsdiff data fetch`; returns the parsers of its actions."""
    data = commands.add_parser("data", help="dataset utilities")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    fetch = sub.add_parser("fetch", help="download and verify MNIST / Fashion-MNIST")
    fetch.add_argument("--dataset", default="all", choices=["all", "mnist", "fashion-mnist"])
    fetch.add_argument(
        "--root", default=None, help="parent folder (default ~/.cache/numpyro_fsdiff)"
    )
    fetch.set_defaults(run=run_fetch)
    return [fetch]


def model_card(record: dict, name: str, dataset_line: str, conditions: str,
               launcher: str = "FSDIFF_DATA=/work/shared/data") -> str:
    """The MODEL_CARD.md text of a shipped checkpoint, from its JSON record (and its parent's);
    `conditions` says what else the machine ran during training (it qualifies the wall time),
    `launcher` is what preceded each recorded command on its line."""
    meta = record.get("metadata", {})
    parent = meta.get("init_from")
    metrics = record.get("metrics", {})
    losses = metrics.get("heldout_dsm_loss", {})
    net = record["network"]["config"]
    cov_params = record["covariance"]["params"]
    stages = []
    if parent:
        stages.append(
            (
                parent.get("command"),
                parent.get("levels"),
                parent.get("step"),
                parent.get("wall_time"),
            )
        )
    stages.append(
        (
            meta.get("command"),
            record["training"].get("levels"),
            record["step"],
            record.get("wall_time"),
        )
    )
    lines = [
        f"# Pretrained FNO score model: {name}",
        "",
        f"Load with `numpyro_fsdiff.pretrained({name!r})`; `.model` is the Q-preconditioned score "
        "$S_\\theta(x, t) = -\\varepsilon_\\theta(x, t)/\\sigma_t$ on one field of any grid size.",
        "",
        f"- Data: {dataset_line}. Model space $x = (u - {record['scaling']['shift']}) / "
        f"{record['scaling']['scale']}$ for pixel intensities $u \\in [0, 1]$ (`to_pixels` / "
        "`from_pixels`).",
        f"- Network: `numpyro_fsdiff.nn.FNO({', '.join(f'{k}={v}' for k, v in net.items())})`, "
        "EMA weights (decay 0.999).",
        f"- Noise covariance: `{record['covariance']['class']}("
        + ", ".join(f"{k}={v:.6g}" for k, v in cov_params.items() if v is not None)
        + ")` (scale chosen so that tr(Q)/|D| = 1 on 28 x 28); VP-SDE "
        f"beta_min={record['sde']['beta_min']:.3g}, beta_max={record['sde']['beta_max']:.3g}, "
        f"T={record['sde']['T']}.",
        "- Loss: denoising score matching with noise prediction in the $L^2(D)$ norm "
        "(`numpyro_fsdiff.dsm_loss`, weight $\\sigma_t^2$, $t \\sim U(10^{-3}, 1)$).",
        "",
        "## Training (coarse to fine, on a 2-core CPU machine)",
        "",
    ]
    total = 0.0
    for i, (command, levels, step, wall) in enumerate(stages, 1):
        total += wall or 0.0
        lines.append(f"{i}. `{launcher} {command}`  ")
        lines.append(
            f"   levels {levels}, stopped at step {step}, training wall time "
            f"{(wall or 0) / 60:.1f} min."
        )
    if parent:
        lines += [
            "",
            f"Stage 1 was stopped at its step-{parent.get('step')} checkpoint; stage 2 "
            "continued its EMA weights with `--init` (a new AdamW state and schedule).",
        ]
    lines += [
        "",
        f"Total training wall time: **{total / 60:.1f} min** ({conditions}).",
        "",
        "## Metrics",
        "",
        f"Held-out DSM loss of the shipped weights ($\\mathbb{{E}}\\|\\varepsilon_\\theta - "
        f"\\eta\\|^2_{{L^2(D)}}$, first {metrics.get('heldout_num')} test images, "
        f"{metrics.get('heldout_repeats')} draws of $(t, \\eta)$ each, fixed seed), the test "
        "images resampled spectrally to each grid:",
        "",
        "| resolution | held-out DSM loss |",
        "|---|---|",
    ]
    for res, value in losses.items():
        lines.append(f"| {res} x {res} | {value:.4f} |")
    lines += [
        "",
        "For scale: the loss of predicting zero noise is $\\mathbb{E}\\|\\eta\\|^2 = "
        "\\operatorname{tr} Q$ (1.0 on 28 x 28).",
        "",
        "Licence of the training data: "
        + (
            "MNIST (Y. LeCun, C. Cortes, C. J. C. Burges), CC BY-SA 3.0."
            if name == "mnist"
            else "Fashion-MNIST (H. Xiao, K. Rasul, R. Vollgraf, Zalando Research), MIT."
        ),
    ]
    return "\n".join(lines) + "\n"
