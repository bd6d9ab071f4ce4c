"""Diffrax sampling vs a plain `lax.scan` Euler-Maruyama loop on the same score.

Per-step cost = (time at `--long` steps - time at `--short` steps) / (long - short), which
removes the fixed cost (initial draw, dispatch); medians of `--repeats` runs after one warm-up
call (compile time reported separately). Writes benchmarks/results/sampling.md.

    nice -n 10 .venv/bin/python benchmarks/bench_sampling.py --num 64 --resolution 28
"""

import argparse
import statistics
import time
from pathlib import Path

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

import numpyro_fsdiff as fs
from numpyro_fsdiff._io import write_text


def network_score(resolution, checkpoint=None):
    try:
        if checkpoint is not None:
            ckpt, what = fs.load_checkpoint(checkpoint), f"checkpoint {checkpoint}"
        else:
            ckpt, what = fs.pretrained("mnist"), "pretrained('mnist')"
        return ckpt.model, ckpt.sde, ckpt.grid((resolution, resolution)), what
    except (FileNotFoundError, ValueError):  # fall back to a random FNO of the default size
        sde = fs.VPSDE(fs.covariance.Matern(2.0, 3.0))
        network = fs.nn.FNO(key=jax.random.key(0))
        return (fs.NoisePredictionScore(network, sde), sde, fs.Grid((resolution, resolution)),
                "FNO() with default sizes, random weights")


@eqx.filter_jit
def scan_em(score, sde, grid, key, num, steps, t_eps=1e-3):
    """Euler-Maruyama for the reverse SDE as a plain lax.scan over a batched state."""
    key0, key1 = jax.random.split(key)
    x = sde.covariance.sample(key0, grid, (num,))
    ts = jnp.linspace(sde.T, t_eps, steps + 1)
    batched = jax.vmap(lambda xi, t: sde.reverse_drift(t, xi, score), in_axes=(0, None))

    def body(x, inputs):
        t0, t1, k = inputs
        dt = t1 - t0
        white = jax.random.normal(k, x.shape)
        noise = sde.covariance.colour(white, grid) * sde.diffusion(t0) * jnp.sqrt(-dt)
        return x + batched(x, t0) * dt + noise, None

    keys = jax.random.split(key1, steps)
    x, _ = jax.lax.scan(body, x, (ts[:-1], ts[1:], keys))
    return x


@eqx.filter_jit
def diffrax_batched_em(score, sde, grid, key, num, steps, t_eps=1e-3):
    """Diffrax Euler on the batched state (one solve, the score vmapped inside the term)."""
    key0, key1 = jax.random.split(key)
    x = sde.covariance.sample(key0, grid, (num,))
    batched_score = jax.vmap(score, in_axes=(0, None))
    brownian = diffrax.UnsafeBrownianPath(shape=(num,) + grid.shape, key=key1)
    terms = sde.reverse_terms(batched_score, brownian, grid)
    sol = diffrax.diffeqsolve(terms, diffrax.Euler(), sde.T, t_eps, (t_eps - sde.T) / steps, x,
                              saveat=diffrax.SaveAt(t1=True), adjoint=diffrax.ForwardMode(),
                              max_steps=steps + 1)
    return sol.ys[-1]


def library(score, sde, grid, key, num, steps):
    x, _ = fs.sample(score, sde, grid, key=key, num_samples=num, solver="euler", steps=steps,
                     denoise=False, batch_size=None)
    return x


def time_it(fn, repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return first, statistics.median(times), times


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--num", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=28)
    parser.add_argument("--short", type=int, default=10)
    parser.add_argument("--long", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "sampling.md"))
    parser.add_argument("--gaussian", action="store_true", help="analytic score instead")
    parser.add_argument("--checkpoint", default=None, help="a checkpoint folder (default: the "
                        "pretrained MNIST model, else a random FNO of the default size)")
    args = parser.parse_args(argv)
    if args.gaussian:
        sde = fs.VPSDE(fs.covariance.Matern(2.0, 3.0))
        grid = fs.Grid((args.resolution, args.resolution))
        score = fs.GaussianScore(fs.covariance.Matern(1.5, 2.0, 2.0), sde, grid)
        what = "GaussianScore (analytic, two FFTs)"
    else:
        score, sde, grid, what = network_score(args.resolution, args.checkpoint)
    key = jax.random.key(0)
    variants = {
        "lax.scan Euler-Maruyama (batched state)": scan_em,
        "diffrax Euler, batched state": diffrax_batched_em,
        "fs.sample (diffrax Euler, vmapped solves)": library,
    }
    rows = []
    for name, fn in variants.items():
        result = {}
        for steps in (args.short, args.long):
            first, median, times = time_it(lambda: fn(score, sde, grid, key, args.num, steps),
                                           args.repeats)
            result[steps] = (first, median, times)
        per_step = (result[args.long][1] - result[args.short][1]) / (args.long - args.short)
        compile_s = result[args.long][0] - result[args.long][1]
        rows.append((name, per_step, result[args.short][1], result[args.long][1], compile_s))
        print(name, per_step, result, flush=True)
    base = rows[0][1]
    lines = [
        "# Sampling overhead: Diffrax vs a plain `lax.scan` loop",
        "",
        f"Score: {what}; {args.num} samples at {args.resolution} x {args.resolution}; reverse "
        f"SDE, Euler-Maruyama, CPU ({jax.devices()[0].device_kind}), shared machine. Per-step "
        f"time = (median at {args.long} steps - median at {args.short} steps) / "
        f"{args.long - args.short}; medians of {args.repeats} runs after a warm-up; compile "
        "time = first call minus the median.",
        "",
        "| variant | per step (ms) | vs lax.scan | total, "
        f"{args.short} steps (s) | total, {args.long} steps (s) | compile (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name, per_step, short, long, compile_s in rows:
        lines.append(f"| {name} | {1e3 * per_step:.2f} | {100 * (per_step / base - 1):+.1f}% | "
                     f"{short:.3f} | {long:.3f} | {compile_s:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    return text, args.out


if __name__ == "__main__":
    text, out = main()
    path = Path(out)
    if path.exists():
        text = path.read_text() + "\n" + text
    write_text(path, text)
