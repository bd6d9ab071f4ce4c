"""Time one full training step of the FNO (or UNet) noise predictor.

A step is `value_and_grad` of `numpyro_fsdiff.dsm_loss` plus an `optax.adam` update, all
under one `equinox.filter_jit`. Compile time (the first call, minus one step) is reported
separately; the throughput is the median over `--repeats` timed runs of `--steps` steps each.

    python benchmarks/bench_train_step.py                     # the reference configuration
    python benchmarks/bench_train_step.py --path vmap batched --out benchmarks/results/train_step.md

The reference configuration: 4 Fourier layers, 14 modes, width 32, a 32 x 32 grid, batch 128.
"""

import argparse
import os
import platform
import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

import numpyro_fsdiff as fsd


def make_step(path: str, sde, optimiser):
    batched = path == "batched"

    @eqx.filter_jit
    def step(model, opt_state, x0, key):
        loss, grads = eqx.filter_value_and_grad(fsd.dsm_loss)(model, sde, x0, key, batched=batched)
        updates, opt_state = optimiser.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, loss

    return step


def benchmark(args, path: str, model_name: str) -> dict:
    key = jax.random.key(0)
    if model_name == "fno":
        model = fsd.nn.FNO(modes=args.modes, width=args.width, depth=args.depth, key=key)
    else:
        model = fsd.nn.UNet(key=key)
    grid = fsd.Grid((args.size, args.size))
    sde = fsd.VPSDE(fsd.covariance.Matern(alpha=2.0, tau=3.0))
    x0 = fsd.covariance.Matern(alpha=2.0, tau=3.0).sample(jax.random.key(1), grid, (args.batch,))
    optimiser = optax.adam(1e-3)
    opt_state = optimiser.init(eqx.filter(model, eqx.is_array))
    step = make_step(path, sde, optimiser)

    start = time.perf_counter()
    model, opt_state, loss = step(model, opt_state, x0, jax.random.key(2))
    jax.block_until_ready(loss)
    first = time.perf_counter() - start

    times = []
    keys = jax.random.split(jax.random.key(3), args.repeats * args.steps)
    for r in range(args.repeats):
        start = time.perf_counter()
        for s in range(args.steps):
            model, opt_state, loss = step(model, opt_state, x0, keys[r * args.steps + s])
        jax.block_until_ready(loss)
        times.append((time.perf_counter() - start) / args.steps)
    median = statistics.median(times)
    params = sum(x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_array)))
    return {
        "model": model_name,
        "path": path,
        "params": params,
        "compile_s": first - median,
        "step_ms": 1e3 * median,
        "min_step_ms": 1e3 * min(times),
        "samples_per_s": args.batch / median,
        "loss": float(loss),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--modes", type=int, default=14)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed run")
    parser.add_argument("--path", nargs="+", default=["batched"], choices=["batched", "vmap"])
    parser.add_argument("--model", nargs="+", default=["fno"], choices=["fno", "unet"])
    parser.add_argument("--out", default=None, help="append a Markdown table to this file")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    rows = [benchmark(args, p, m) for m in args.model for p in args.path]
    load_after = os.getloadavg()
    header = (
        "| model | path | params | compile (s) | median step (ms) | min step (ms) | samples/s |\n"
        "|---|---|---|---|---|---|---|"
    )
    lines = [
        f"| {r['model']} | {r['path']} | {r['params']:,} | {r['compile_s']:.1f} | "
        f"{r['step_ms']:.1f} | {r['min_step_ms']:.1f} | {r['samples_per_s']:.0f} |"
        for r in rows
    ]
    config = (
        f"batch {args.batch}, grid {args.size} x {args.size}, modes {args.modes}, width "
        f"{args.width}, depth {args.depth}; median of {args.repeats} runs of {args.steps} steps"
    )
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"jax {jax.__version__} on {jax.default_backend()}; load average (1/5/15 min) "
        f"before {'/'.join(f'{x:.1f}' for x in load_before)}, after "
        f"{'/'.join(f'{x:.1f}' for x in load_after)}"
    )
    text = "\n".join([config, "", machine, "", header, *lines, ""])
    print(text)
    if args.out:
        previous = open(args.out).read() if os.path.exists(args.out) else ""
        fsd._io.write_text(args.out, previous + text + "\n")
    return rows


if __name__ == "__main__":
    jnp.zeros(())  # initialise the backend before timing
    main()
