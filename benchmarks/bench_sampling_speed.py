"""Sampling speed: the per-sample (vmapped) path against the batched path, interleaved.

200 Euler-Maruyama steps for 64 samples on a 32 x 32 grid with the reference-sized FNO (4
Fourier layers, 14 modes, width 32; random initialisation: speed does not depend on the
weights), via `numpyro_fsdiff.sample(..., as_one_state=False | True)`:

- `per-sample`: every sample its own solve, vmapped; the network is called on one field at a
  time inside the vmap (`FNO.__call__`, a batch of one);
- `batched`: the 64 samples as one state of shape (64, 32, 32); the score calls the network's
  `batched(xs, ts)` once per step on the whole batch.

Both give the same draws (tests/test_sample_config.py). Compile time (the first call) is
reported apart; the sampling time is the median of `--repeats` runs, the two paths alternating
so that they share the machine's load.

    python benchmarks/bench_sampling_speed.py --repeats 3 --out benchmarks/results/sampling_speed.md
"""

import argparse
import os
import platform
import statistics
import time

import jax

import numpyro_fsdiff as fsd
from numpyro_fsdiff._io import write_text


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    sde = fsd.VPSDE(fsd.covariance.Matern(2.0, 3.0))
    grid = fsd.Grid((args.resolution, args.resolution))
    network = fsd.nn.FNO(modes=14, width=32, depth=4, key=jax.random.key(0))
    score = fsd.NoisePredictionScore(network, sde)
    config = fsd.SolverConfig("euler", steps=args.steps)

    def run(batched, seed):
        x, _ = fsd.sample(score, sde, grid, key=jax.random.key(seed),
                          num_samples=args.num_samples, solver=config, denoise=False,
                          batch_size=None, as_one_state=batched)
        return jax.block_until_ready(x)

    paths = {"per-sample": False, "batched": True}
    compile_s, times = {}, {name: [] for name in paths}
    for name, batched in paths.items():
        start = time.perf_counter()
        run(batched, 0)  # compile + one run
        first = time.perf_counter() - start
        start = time.perf_counter()
        run(batched, 1)
        compile_s[name] = first - (time.perf_counter() - start)
    for r in range(args.repeats):
        for name, batched in paths.items():
            start = time.perf_counter()
            run(batched, 2 + r)
            times[name].append(time.perf_counter() - start)

    median = {name: statistics.median(ts) for name, ts in times.items()}
    speedup = median["per-sample"] / median["batched"]
    rows = [
        f"| {name} | {median[name]:.2f} | {min(times[name]):.2f}-{max(times[name]):.2f} | "
        f"{args.num_samples / median[name]:.1f} | {compile_s[name]:.1f} |"
        for name in paths
    ]
    lines = [
        "# Sampling speed: per-sample against batched path",
        "",
        f"{args.steps} Euler-Maruyama steps x {args.num_samples} samples at "
        f"{args.resolution} x {args.resolution}, FNO (4 layers, 14 modes, width 32), "
        f"median of {args.repeats} interleaved runs; compile time apart. "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
        f"JAX {jax.__version__} on {jax.default_backend()}.",
        "",
        "| path | median s | range s | samples/s | compile s |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
        f"Speed-up of the batched path: **{speedup:.2f}x**.",
        "",
        "Command: `python benchmarks/bench_sampling_speed.py "
        f"--repeats {args.repeats} --out {args.out}`",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        write_text(args.out, text)


if __name__ == "__main__":
    main()
