"""Coarse-to-fine against finest-only training: wall time to the same held-out DSM loss.

Both runs train the same FNO on MNIST (model space x = 2u - 1, Matern Q with tr(Q)/|D| = 1 on
28 x 28) with the same optimiser; the finest-only run takes `--fine-steps` steps on 28 x 28,
the multilevel run `--coarse-steps` on 14 x 14 and then `--tail-steps` on 28 x 28. The held-out
DSM loss of the EMA weights is evaluated on 28 x 28 (fixed times and noise) every
`--eval-every` steps; evaluation time is excluded from the training wall time. The target is
the final held-out loss of the finest-only run; the speed-up is the wall time the finest-only
run needs to first reach it divided by the time the multilevel run needs. Compile time (the
first step of each level, which includes tracing and XLA compilation) is reported separately.

    .venv/bin/python benchmarks/bench_multilevel.py --out benchmarks/results/multilevel.md

With `--schedules` it compares instead, at equal total steps, the two-stage recipe of the shipped
weights (a sequential coarse-to-fine run `--stage1`, then a second short run `--stage2` started
from its EMA weights with a fresh optimiser, to repair the coarser grids) with one interleaved
run (`train(..., level_schedule="interleaved")`, each level's steps summed over both stages) and
with one sequential run of the same steps: the held-out DSM loss of the EMA weights on 14, 28 and
56 grids (fixed times and noise, the same for every model; its standard error from 5 chunks):

    .venv/bin/python benchmarks/bench_multilevel.py --schedules \\
        --out benchmarks/results/multilevel.md
"""

import argparse
import json
import os
import platform
import time

import jax
import numpy as np

from numpyro_fsdiff import VPSDE, Grid, heldout_loss, train
from numpyro_fsdiff._io import append_text, write_text
from numpyro_fsdiff.cli._train_command import parse_covariance
from numpyro_fsdiff.data import PixelScaling, load, load_subset
from numpyro_fsdiff.nn import FNO


def run(levels, x_train, x_eval, sde, args, seed):
    network = FNO(
        modes=args.modes,
        width=args.width,
        depth=args.depth,
        projection_dim=args.projection_dim,
        embedding_dim=32,
        key=jax.random.key(seed),
    )
    tick = time.perf_counter()
    result = train(
        network,
        sde,
        x_train,
        levels,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        lr_schedule=args.lr_schedule,
        key=jax.random.key(seed),
        eval_data=x_eval,
        eval_every=args.eval_every,
        eval_shape=(28, 28),
        log_every=args.eval_every,
        progress=False,
    )
    total = time.perf_counter() - tick
    compile_time = sum(
        h["compile_and_first_step"] for h in result.history if "compile_and_first_step" in h
    )
    curve = [
        (h["step"], h["wall_time"], h["heldout_loss"], h["cpu_time"])
        for h in result.history
        if "heldout_loss" in h
    ]
    return dict(
        levels=levels,
        curve=curve,
        compile=compile_time,
        wall_with_eval=total,
        train_wall=result.wall_time,
    )


def time_to(curve, target):
    for step, wall, loss, cpu in curve:
        if loss <= target:
            return step, wall, cpu
    return None, None, None


def intermediate_lines(row):
    curve = row["fine"]["curve"]
    lines = []
    for fraction in (0.25, 0.5, 0.75, 1.0):
        target = curve[max(0, round(fraction * len(curve)) - 1)][2]
        f_step, f_wall, f_cpu = time_to(curve, target)
        m_step, m_wall, m_cpu = time_to(row["multi"]["curve"], target)
        reached = m_wall is not None
        lines.append(
            f"| {row['repeat']} | {target:.4f} | {f_wall:.1f} ({f_step}) | "
            + (f"{m_wall:.1f} ({m_step}) | {f_wall / m_wall:.2f}x | {f_cpu / m_cpu:.2f}x |"
               if reached else "not reached | - | - |")
        )
    return lines


def parse_stage(text: str):
    """`"14:300,28:200"` -> `[(14, 300), (28, 200)]`."""
    return [tuple(int(v) for v in part.split(":")) for part in text.split(",")]


def heldout_table(network, sde, x_eval, resolutions=(14, 28, 56), chunks=5):
    """Held-out DSM loss at each resolution: the mean and the standard error over `chunks`."""
    out = {}
    size = x_eval.shape[0] // chunks
    for n in resolutions:
        values = np.array([
            heldout_loss(network, sde, x_eval[i * size : (i + 1) * size], shape=(n, n),
                         key=jax.random.fold_in(jax.random.key(12345), i), batch_size=size)
            for i in range(chunks)
        ])  # fmt: skip
        out[n] = (float(values.mean()), float(values.std(ddof=1) / np.sqrt(chunks)))
    return out


def compare_schedules(args, x_train, x_eval, sde, data):
    stage1, stage2 = parse_stage(args.stage1), parse_stage(args.stage2)
    total = {}
    for n, steps in stage1 + stage2:
        total[n] = total.get(n, 0) + steps
    levels = sorted(total.items())
    common = dict(batch_size=args.batch_size, learning_rate=args.lr, progress=False,
                  log_every=100, key=jax.random.key(0))  # fmt: skip

    def network():
        return FNO(
            modes=args.modes,
            width=args.width,
            depth=args.depth,
            projection_dim=args.projection_dim,
            embedding_dim=32,
            key=jax.random.key(0),
        )

    def seconds(result):  # training wall time without the first step of each level (compile)
        compile_s = sum(h.get("compile_and_first_step", 0.0) for h in result.history)
        return result.wall_time - compile_s

    runs, times = {}, {}
    first = train(network(), sde, x_train, stage1, **common)
    second = train(first.network, sde, x_train, stage2, **{**common, "warmup_steps": 20})
    runs["two-stage (stage 1 only)"], times["two-stage (stage 1 only)"] = first, seconds(first)
    runs["two-stage"], times["two-stage"] = second, seconds(first) + seconds(second)
    for schedule in ("sequential", "interleaved"):
        result = train(network(), sde, x_train, levels, level_schedule=schedule, **common)
        runs[f"one {schedule} run"], times[f"one {schedule} run"] = result, seconds(result)
    runs = {name: result.network for name, result in runs.items()}
    tables = {name: heldout_table(net, sde, x_eval) for name, net in runs.items()}
    command = (
        f"FSDIFF_DATA=/work/shared/data .venv/bin/python benchmarks/bench_multilevel.py "
        f"--schedules --stage1 {args.stage1} --stage2 {args.stage2} --num-train "
        f"{args.num_train} --num-eval {args.num_eval} --batch-size {args.batch_size} --lr "
        f"{args.lr} --modes {args.modes} --width {args.width} --depth {args.depth} "
        f"--projection-dim {args.projection_dim}"
    )
    lines = [
        "",
        "## Interleaved levels against the two-stage recipe (equal total steps)",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs, "
        f"JAX {jax.__version__} ({jax.default_backend()}). Data: {data}. Model: "
        f"FNO(modes={args.modes}, width={args.width}, depth={args.depth}, projection_dim="
        f"{args.projection_dim}); batch {args.batch_size}; AdamW lr {args.lr}, warm-up and "
        "cosine over each run; EMA 0.999; Q = Matern(alpha=1.5, tau=10), tr(Q)/|D| = 1 on 28 x 28.",
        "",
        f"Two-stage: stage 1 `{stage1}` (sequential), then stage 2 `{stage2}` from stage 1's EMA "
        f"weights with a fresh optimiser (warm-up 20 steps), as the shipped MNIST weights were "
        f"made. One run: `{levels}` ({sum(total.values())} steps, as many as both stages), "
        "sequential or interleaved (`level_schedule=\"interleaved\"`, one optimiser and one "
        "schedule).",
        "",
        "Held-out DSM loss of the EMA weights (mean +- standard error over 5 chunks of "
        f"{args.num_eval // 5} images; the same times and noise for every model):",
        "",
        "| training | 14 x 14 | 28 x 28 | 56 x 56 | training wall time (s, compile excluded) |",
        "|---|---|---|---|---|",
    ]
    for name, table in tables.items():
        cells = " | ".join(f"{m:.4f} +- {se:.4f}" for m, se in table.values())
        lines.append(f"| {name} | {cells} | {times[name]:.0f} |")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--schedules", action="store_true",
                   help="compare the two-stage recipe with one interleaved run")  # fmt: skip
    p.add_argument("--stage1", default="14:300,28:200")
    p.add_argument("--stage2", default="14:60,28:40")
    p.add_argument("--fine-steps", type=int, default=600)
    p.add_argument("--coarse-steps", type=int, default=600)
    p.add_argument("--tail-steps", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--num-train", type=int, default=20000)
    p.add_argument("--num-eval", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--modes", type=int, default=8)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--projection-dim", type=int, default=32)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument(
        "--lr-schedule",
        default="global",
        choices=["global", "per-level"],
        help="restart the warm-up and cosine at each level (per-level) or not (global)",
    )
    p.add_argument("--out", default=None)
    args = p.parse_args()

    scaling = PixelScaling()
    try:
        x_train = np.asarray(scaling.from_pixels(load("mnist", "train").images[: args.num_train]))
        x_eval = np.asarray(scaling.from_pixels(load("mnist", "test").images[: args.num_eval]))
        data = f"MNIST train[:{args.num_train}], held-out MNIST test[:{args.num_eval}]"
    except FileNotFoundError:
        sub = np.asarray(scaling.from_pixels(load_subset().images))
        x_train, x_eval = sub[: 2000 - args.num_eval], sub[2000 - args.num_eval :]
        data = "the shipped 2,000-image MNIST test subset (split train/held-out)"
    covariance, _ = parse_covariance("matern:alpha=1.5,tau=10", Grid((28, 28)))
    sde = VPSDE(covariance)
    if args.schedules:
        text = compare_schedules(args, x_train, x_eval, sde, data)
        print(text)
        if args.out:
            append_text(args.out, text)
        return
    fine_levels = [(28, args.fine_steps)]
    multi_levels = [(14, args.coarse_steps), (28, args.tail_steps)]
    rows = []
    for r in range(args.repeats):
        fine = run(fine_levels, x_train, x_eval, sde, args, seed=r)
        multi = run(multi_levels, x_train, x_eval, sde, args, seed=r)
        target = fine["curve"][-1][2]
        f_step, f_wall, f_cpu = time_to(fine["curve"], target)
        m_step, m_wall, m_cpu = time_to(multi["curve"], target)
        rows.append(
            dict(
                repeat=r,
                target=target,
                fine=fine,
                multi=multi,
                fine_step=f_step,
                fine_wall=f_wall,
                multi_step=m_step,
                multi_wall=m_wall,
                ratio=None if m_wall is None else f_wall / m_wall,
                fine_cpu=f_cpu,
                multi_cpu=m_cpu,
                cpu_ratio=None if m_cpu is None else f_cpu / m_cpu,
                ratio_without_compile=None
                if m_wall is None
                else (f_wall - fine["compile"]) / (m_wall - multi["compile"]),
            )
        )
        print(
            json.dumps({k: v for k, v in rows[-1].items() if k not in ("fine", "multi")}),
            flush=True,
        )

    def med(key):
        values = [row[key] for row in rows if row[key] is not None]
        return float(np.median(values)) if values else float("nan")

    lines = [
        "# Multilevel (coarse-to-fine) against finest-only training",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_multilevel.py "
        f"--fine-steps {args.fine_steps} --coarse-steps {args.coarse_steps} "
        f"--tail-steps {args.tail_steps} --eval-every {args.eval_every} "
        f"--num-train {args.num_train} --batch-size {args.batch_size} --repeats {args.repeats} "
        f"--lr-schedule {args.lr_schedule} --modes {args.modes} --width {args.width} "
        f"--depth {args.depth} --projection-dim {args.projection_dim}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs "
        f"(load average at the end {os.getloadavg()[0]:.1f}), JAX {jax.__version__} "
        f"({jax.default_backend()}). Data: {data}.",
        f"Model: FNO(modes={args.modes}, width={args.width}, depth={args.depth}, "
        f"projection_dim={args.projection_dim}); batch {args.batch_size}; AdamW lr {args.lr} "
        f"with warm-up and cosine decay ({args.lr_schedule} schedule); EMA 0.999; "
        "Q = Matern(alpha=1.5, tau=10), "
        "tr(Q)/|D| = 1 on 28 x 28.",
        "",
        "Held-out DSM loss of the EMA weights on 28 x 28 (fixed times and noise), against the "
        "training wall time (evaluation excluded; compilation included):",
        "",
        "| repeat | target (finest-only final loss) | finest-only: s to target (step) | "
        "multilevel: s to target (step) | wall speed-up | without compile | CPU-time speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        fmt = lambda v: "not reached" if v is None else f"{v:.1f}"  # noqa: E731
        speed = lambda v: "-" if v is None else f"{v:.2f}x"  # noqa: E731
        lines.append(
            f"| {row['repeat']} | {row['target']:.4f} | {fmt(row['fine_wall'])} "
            f"({row['fine_step']}) | {fmt(row['multi_wall'])} ({row['multi_step']}) | "
            f"{speed(row['ratio'])} | {speed(row['ratio_without_compile'])} | "
            f"{speed(row['cpu_ratio'])} |"
        )
    lines += [
        "",
        f"Median speed-up (wall time to the same held-out loss): **{med('ratio'):.2f}x** "
        f"({med('ratio_without_compile'):.2f}x without compile time); median speed-up in "
        f"process CPU time (all threads, insensitive to other jobs): **{med('cpu_ratio'):.2f}x**.",
        "",
        "Wall time to intermediate targets (the finest-only run's held-out loss at a quarter, "
        "half and three quarters of its steps, and at its end):",
        "",
        "| repeat | target | finest-only s (step) | multilevel s (step) | wall speed-up "
        "| CPU-time speed-up |",
        "|---|---|---|---|---|---|",
        *[
            line
            for row in rows
            for line in intermediate_lines(row)
        ],
        "",
        "Compile time (first step of each level): finest-only "
        + ", ".join(f"{row['fine']['compile']:.1f} s" for row in rows)
        + "; multilevel "
        + ", ".join(f"{row['multi']['compile']:.1f} s" for row in rows)
        + ".",
        "",
        "Curves (step, training wall time s, held-out loss):",
        "",
    ]
    for row in rows:
        for name in ("fine", "multi"):
            pts = "; ".join(f"{s}: {w:.0f} s, {v:.4f}" for s, w, v, _ in row[name]["curve"])
            lines.append(f"- repeat {row['repeat']} {name} {row[name]['levels']}: {pts}")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_text(args.out, text)


if __name__ == "__main__":
    main()
