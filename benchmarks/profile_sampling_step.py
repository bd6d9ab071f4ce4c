"""Where the time of a batched sampling step goes, on CPU: FLOPs, rate, thread use, operations.

The setting of `bench_sampling_speed.py`: Euler-Maruyama steps for 64 samples at 32 x 32 with
the reference-sized FNO (4 layers, 14 modes, width 32), solved as one state (the batched path).
Prints

- the FLOPs of one network call (XLA's cost analysis of the compiled `FNO.batched`);
- the wall time per step of the solve (median of `--repeats` runs of `--steps` steps, compile
  apart) and the FLOP rate it implies;
- the machine's matrix-product rate (a 2048 x 2048 float32 product), as the ceiling;
- the per-operation profile of the solve (`profile_train_step.py`'s reader): the time the
  worker threads were busy per step against the wall time shows how many cores XLA keeps busy.

    python benchmarks/profile_sampling_step.py --steps 50 --top 15
"""

import argparse
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
from profile_train_step import per_operation_ms, print_profile

import numpyro_fsdiff as fsd


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of `repeats` calls of `fn` after one warm-up call."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="Euler-Maruyama steps per solve")
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--top", type=int, default=15, help="operations listed")
    args = parser.parse_args(argv)

    n, batch = args.resolution, args.num_samples
    sde = fsd.VPSDE(fsd.covariance.Matern(2.0, 3.0))
    grid = fsd.Grid((n, n))
    network = fsd.nn.FNO(modes=14, width=32, depth=4, key=jax.random.key(0))
    score = fsd.NoisePredictionScore(network, sde)
    config = fsd.SolverConfig("euler", steps=args.steps)

    xs = jnp.zeros((batch, n, n))
    ts = jnp.full((batch,), 0.5)
    cost = jax.jit(type(network).batched).lower(network, xs, ts).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost["flops"])

    @jax.jit
    def solve(key):
        samples, _ = fsd.sample(score, sde, grid, key=key, num_samples=batch, solver=config,
                                denoise=False, batch_size=None, as_one_state=True)
        return samples

    hlo = solve.lower(jax.random.key(0)).compile().as_text()
    keys = iter(jax.random.split(jax.random.key(1), args.repeats + 1))
    per_step = median_seconds(lambda: solve(next(keys)), args.repeats) / args.steps

    size = 2048
    a = jax.random.normal(jax.random.key(2), (size, size))
    product = jax.jit(lambda a: a @ a)
    peak = 2 * size**3 / median_seconds(lambda: product(a), 10)

    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder):
            jax.block_until_ready(solve(jax.random.key(9)))
        per_op = per_operation_ms(folder, args.steps)
    busy = sum(per_op.values())

    print(f"{args.steps} Euler-Maruyama steps, {batch} samples at {n} x {n}, "
          f"JAX {jax.__version__} on {jax.default_backend()}")
    print(f"network call: {flops / 1e9:.2f} GFLOP (XLA cost analysis)")
    print(f"wall time per step: {per_step * 1e3:.1f} ms -> {flops / per_step / 1e9:.0f} GFLOP/s")
    print(f"{size} x {size} matrix product: {peak / 1e9:.0f} GFLOP/s "
          f"(a step at that rate: {flops / peak * 1e3:.1f} ms)")
    print(f"worker threads busy {busy:.1f} ms per step of {per_step * 1e3:.1f} ms wall: "
          f"{busy / (per_step * 1e3):.2f} cores in use")
    print_profile(per_op, hlo, args.top)


if __name__ == "__main__":
    main()
