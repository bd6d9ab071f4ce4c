"""Per-operation profile of one compiled FNO training step on CPU (the reference configuration).

The step is the library's own `numpyro_fsdiff.train_step`, with the arguments `train` gives it.

Traces a few steps with `jax.profiler`, reads the trace back with jaxlib's `ProfileData` and
prints the time per XLA operation (summed over the worker threads, per step), grouped by kind
and with each operation's result shape and source, so that hot spots such as transposed
copies are visible:

    python benchmarks/profile_train_step.py --top 30
"""

import argparse
import collections
import glob
import re
import tempfile

import numpyro_fsdiff as fsd
from numpyro_fsdiff.cli import reuse_freed_memory


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="traced steps")
    parser.add_argument("--top", type=int, default=25, help="operations listed")
    parser.add_argument("--default-allocator", action="store_true")
    args = parser.parse_args(argv)
    if not args.default_allocator:
        reuse_freed_memory()

    import jax
    import jax.numpy as jnp

    model = fsd.nn.FNO(key=jax.random.key(0))
    covariance = fsd.covariance.Matern(alpha=2.0, tau=3.0)
    sde = fsd.VPSDE(covariance)
    x0 = covariance.sample(jax.random.key(1), fsd.Grid((32, 32)), (128,))
    # The library's own step, with the arguments `train` gives it.
    optimiser, _ = fsd.TrainConfig([(32, 10_000)]).optimizer()
    settings = dict(
        optimizer=optimiser,
        sde=sde,
        grid=fsd.Grid((32, 32)),
        t_eps=jnp.asarray(1e-3),
        ema_decay=jnp.asarray(0.999),
        batched=True,
    )
    state = fsd.TrainState.init(model, optimiser)
    hlo = fsd.train_step.lower(state, x0, jax.random.key(0), **settings).compile()
    hlo = hlo.compiled.as_text()
    for i in range(5):  # compile and warm up
        state, loss = jax.block_until_ready(
            fsd.train_step(state, x0, jax.random.key(i), **settings)
        )
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder):
            for i in range(args.steps):
                state, loss = jax.block_until_ready(
                    fsd.train_step(state, x0, jax.random.key(10 + i), **settings)
                )
        per_op = per_operation_ms(folder, args.steps)
    print_profile(per_op, hlo, args.top)


def per_operation_ms(folder: str, steps: int) -> collections.Counter:
    """Milliseconds per call of each XLA operation in the trace under `folder`, summed over
    XLA's worker threads and divided by the `steps` traced calls."""
    from jax._src.lib import _profile_data

    trace = glob.glob(folder + "/**/*.xplane.pb", recursive=True)[0]
    profile = _profile_data.ProfileData.from_file(trace)
    per_op = collections.Counter()
    for plane in profile.planes:
        for line in plane.lines:
            if "XLAEigen" not in line.name:  # XLA's worker threads
                continue
            for event in line.events:
                if event.name != "ThunkExecutor::Execute" and not event.name.startswith("end:"):
                    per_op[event.name] += event.duration_ns / steps / 1e6
    return per_op


def print_profile(per_op: collections.Counter, hlo: str, top: int) -> None:
    """Print the busy time by kind of operation and the `top` operations, each with its
    result shape and source from the compiled `hlo` text."""
    described = {}
    for match in re.finditer(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+\[[^\]]*\]\S*) .*$", hlo, re.M):
        source = re.search(r'op_name="([^"]*)"', match.group(0))
        origin = source.group(1)[-50:] if source else ""
        described[match.group(1)] = f"{match.group(2)[:36]:36s} {origin}"
    kinds = collections.Counter()
    for name, ms in per_op.items():
        kinds[re.sub(r"\.\d+$", "", name)] += ms
    print(f"thread-busy time per step: {sum(per_op.values()):.1f} ms (both worker threads)")
    for kind, ms in kinds.most_common(10):
        print(f"  {ms:8.2f} ms  {kind}")
    print("top operations (ms per step):")
    for name, ms in per_op.most_common(top):
        print(f"  {ms:7.2f}  {name:28s} {described.get(name, '')}")


if __name__ == "__main__":
    main()
