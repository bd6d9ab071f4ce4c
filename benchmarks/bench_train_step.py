"""Time one full training step of the FNO (or UNet) noise predictor.

A step is the library's own `numpyro_fsdiff.train_step`, called as `numpyro_fsdiff.train` calls
it: `value_and_grad` of `numpyro_fsdiff.dsm_loss`, the training optimiser (global-norm clipping
and AdamW with `train`'s default schedule) and the EMA update, under one `equinox.filter_jit`.
Compile time (tracing, lowering and compiling, timed apart from any step) is reported
separately; the throughput is the median over `--repeats` timed runs of `--steps` steps each.
`--ceilings` adds a roofline: XLA's floating-point operation and byte counts per step against
this machine's measured matmul and streaming rates.

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

import numpyro_fsdiff as fsd
from numpyro_fsdiff.cli import reuse_freed_memory


def naive_grid_major(layer, v):
    """The straightforward spectral layer: rfft2, a complex einsum over the kept modes, irfft2
    (the baseline the issue measured at about half PyTorch's speed), on the FNO's grid-major
    layout (n2, n1, batch, channels)."""
    from numpyro_fsdiff.nn._spectral import kept_modes

    v = jnp.transpose(v, (2, 3, 1, 0))  # (b, c, n1, n2)
    _, _, n1, n2 = v.shape
    positive, negative, second = kept_modes(layer.modes, n1, n2)
    m = layer.modes
    weight = jax.lax.complex(layer.weight_real, layer.weight_imag)  # (2m, m, in, out)
    weight = jnp.concatenate([weight[:positive], weight[2 * m - negative :]])[:, :second]
    vhat = jnp.fft.rfft2(v)
    kept = jnp.concatenate(
        [vhat[:, :, :positive, :second], vhat[:, :, n1 - negative :, :second]], 2
    )
    mixed = jnp.einsum("bixy,xyio->boxy", kept, weight)
    out = jnp.zeros(vhat.shape[:1] + (layer.out_channels,) + vhat.shape[2:], vhat.dtype)
    out = out.at[:, :, :positive, :second].set(mixed[:, :, :positive])
    out = out.at[:, :, n1 - negative :, :second].set(mixed[:, :, positive:])
    return jnp.transpose(jnp.fft.irfft2(out, s=(n1, n2)), (3, 2, 0, 1))


def make_step(path: str, sde, grid, optimiser):
    """`numpyro_fsdiff.train_step` with the arguments `train` gives it (arrays for `t_eps` and
    `ema_decay`, as there)."""
    settings = dict(
        optimizer=optimiser,
        sde=sde,
        grid=grid,
        t_eps=jnp.asarray(1e-3),
        ema_decay=jnp.asarray(0.999),
        batched=path == "batched",
    )

    def step(state, x0, key):
        return fsd.train_step(state, x0, key, **settings)

    def lower(state, x0, key):
        return fsd.train_step.lower(state, x0, key, **settings)

    step.lower = lower
    return step


def benchmark(args, path: str, model_name: str) -> dict:
    key = jax.random.key(0)
    spectral = fsd.nn.SpectralConv2d
    fast = spectral.apply_grid_major
    if model_name == "fno-naive":
        spectral.apply_grid_major = naive_grid_major
    try:
        return _benchmark(args, path, model_name, key)
    finally:
        spectral.apply_grid_major = fast


def _benchmark(args, path: str, model_name: str, key) -> dict:
    if model_name.startswith("fno"):
        model = fsd.nn.FNO(
            modes=args.modes,
            width=args.width,
            depth=args.depth,
            projection_dim=args.projection_dim,
            cutoff=args.cutoff,
            local_kernel=args.local_kernel,
            key=key,
        )
    else:
        model = fsd.nn.UNet(key=key)
    grid = fsd.Grid((args.size, args.size))
    sde = fsd.VPSDE(fsd.covariance.Matern(alpha=2.0, tau=3.0))
    x0 = fsd.covariance.Matern(alpha=2.0, tau=3.0).sample(jax.random.key(1), grid, (args.batch,))
    optimiser, _ = fsd.TrainConfig([(args.size, 10_000)]).optimizer()  # train's optimiser
    state = fsd.TrainState.init(model, optimiser)
    step = make_step(path, sde, grid, optimiser)

    start = time.perf_counter()
    compiled = step.lower(state, x0, jax.random.key(2)).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost  # older jax: one dict per device
    # A few untimed steps: the allocator's heap grows to its working size in the first ones.
    for key in jax.random.split(jax.random.key(4), args.warmup):
        state, loss = step(state, x0, key)
    jax.block_until_ready(loss)

    times, cpu_times = [], []
    keys = jax.random.split(jax.random.key(3), args.repeats * args.steps)
    for r in range(args.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        for s in range(args.steps):
            state, loss = step(state, x0, keys[r * args.steps + s])
        jax.block_until_ready(loss)
        times.append((time.perf_counter() - start) / args.steps)
        cpu_times.append((time.process_time() - cpu_start) / args.steps)
    median = statistics.median(times)
    cpu = statistics.median(cpu_times)
    params = sum(x.size for x in jax.tree.leaves(eqx.filter(state.network, eqx.is_array)))
    return {
        "model": model_name,
        "path": path,
        "params": params,
        "compile_s": compile_s,
        "step_ms": 1e3 * median,
        "min_step_ms": 1e3 * min(times),
        "samples_per_s": args.batch / median,
        "cpu_step_s": cpu,
        # What the step would reach with all cores to itself and no contention slowdown.
        "cpu_bound_samples_per_s": args.batch * (os.cpu_count() or 1) / cpu,
        # XLA's own count for the compiled step: floating-point operations and bytes read
        # plus written by every operation (an upper bound on memory traffic: caches absorb
        # part of it).
        "gflop": cost["flops"] / 1e9,
        "gbytes": cost["bytes accessed"] / 1e9,
        "loss": float(loss),
    }


def machine_ceilings(repeats: int = 20) -> dict:
    """What this machine's XLA reaches on the two kinds of work a step is made of: a large
    float32 matrix product (GFLOP/s) and a streaming elementwise map over 64 MiB (GB/s read
    plus written), medians of `repeats` calls on all cores."""

    def median_seconds(fn, x):
        jax.block_until_ready(fn(x))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(fn(x))
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    a = jax.random.normal(jax.random.key(0), (2048, 2048))
    b = jax.random.normal(jax.random.key(0), (2**24,))
    return {
        "matmul_gflops": 2 * 2048**3 / median_seconds(jax.jit(lambda a: a @ a), a) / 1e9,
        "stream_gbps": 2 * b.nbytes / median_seconds(jax.jit(lambda b: 2.0 * b + 1.0), b) / 1e9,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--modes", type=int, default=14)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--projection-dim", type=int, default=128)
    parser.add_argument("--cutoff", type=int, default=None, help="band cutoff K of the FNO")
    parser.add_argument("--local-kernel", type=int, default=None, help="needs --cutoff")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed run")
    parser.add_argument("--path", nargs="+", default=["batched"], choices=["batched", "vmap"])
    parser.add_argument("--model", nargs="+", default=["fno"], choices=["fno", "fno-naive", "unet"])
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps after compiling")
    parser.add_argument(
        "--default-allocator",
        action="store_true",
        help="do not call numpyro_fsdiff.reuse_freed_memory() (glibc returns freed memory)",
    )
    parser.add_argument(
        "--ceilings",
        action="store_true",
        help="also measure this machine's matmul GFLOP/s and streaming GB/s (a roofline)",
    )
    parser.add_argument("--out", default=None, help="append a Markdown table to this file")
    args = parser.parse_args(argv)
    allocator = "glibc default"
    if not args.default_allocator:
        allocator = "reuse_freed_memory()" if reuse_freed_memory() else "glibc default"

    load_before = os.getloadavg()
    rows = [benchmark(args, p, m) for m in args.model for p in args.path]
    load_after = os.getloadavg()
    header = (
        "| model | path | params | compile (s) | median step (ms) | min step (ms) | samples/s "
        "| CPU s/step | samples/s if CPU-bound | GFLOP/step | GB/step | GFLOP/s | GB/s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [
        f"| {r['model']} | {r['path']} | {r['params']:,} | {r['compile_s']:.1f} | "
        f"{r['step_ms']:.1f} | {r['min_step_ms']:.1f} | {r['samples_per_s']:.0f} | "
        f"{r['cpu_step_s']:.2f} | {r['cpu_bound_samples_per_s']:.0f} | {r['gflop']:.1f} | "
        f"{r['gbytes']:.2f} | {r['gflop'] / r['step_ms'] * 1e3:.0f} | "
        f"{r['gbytes'] / r['step_ms'] * 1e3:.1f} |"
        for r in rows
    ]
    config = (
        f"batch {args.batch}, grid {args.size} x {args.size}, modes {args.modes}, width "
        f"{args.width}, depth {args.depth}, projection {args.projection_dim}; "
        f"median of {args.repeats} runs of {args.steps} steps after {args.warmup} warm-up "
        f"steps; allocator: {allocator}"
    )
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"jax {jax.__version__} on {jax.default_backend()}; load average (1/5/15 min) "
        f"before {'/'.join(f'{x:.1f}' for x in load_before)}, after "
        f"{'/'.join(f'{x:.1f}' for x in load_after)}"
    )
    parts = [config, "", machine, "", header, *lines, ""]
    if args.ceilings:
        ceilings = machine_ceilings()
        parts += [
            f"Machine ceilings (all cores): float32 matmul 2048 x 2048 "
            f"{ceilings['matmul_gflops']:.0f} GFLOP/s, streaming map over 64 MiB "
            f"{ceilings['stream_gbps']:.1f} GB/s. Per step of the first row, the matrix "
            f"products alone need at least {rows[0]['gflop'] / ceilings['matmul_gflops'] * 1e3:.0f}"
            f" ms and XLA's byte count at the streaming rate "
            f"{rows[0]['gbytes'] / ceilings['stream_gbps'] * 1e3:.0f} ms.",
            "",
        ]
    text = "\n".join(parts)
    print(text)
    if args.out:
        fsd._io.append_text(args.out, text + "\n")
    return rows


if __name__ == "__main__":
    main()
