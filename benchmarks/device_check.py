"""One-command accelerator check: training, sampling, a log-density and an inverse problem.

On the device JAX finds by default (`jax.devices()[0]`) it runs, each section timed apart from
its compilation (median of `--repeats` calls after the first, which compiles):

1. `train_step`: the library's training step ([`numpyro_fsdiff.train_step`]) of an FNO
   (the reference configuration of bench_train_step.py: 32 x 32, batch 128): samples/s.
2. `sampling`: a 200-step Euler-Maruyama solve of the reverse SDE for 64 fields on 32 x 32 with
   the shipped MNIST model (`numpyro_fsdiff.sample`): fields/s.
3. `log_density`: `DiffusionPrior.log_prob` of a 28 x 28 test image of the shipped subset and
   its gradient (`jax.value_and_grad`): evaluations/s.
4. `inverse`: DPS deblurring of a 28 x 28 test image (`numpyro_fsdiff.inverse.posterior`):
   seconds per posterior draw, and the PSNR of the mean.

After each section it records the peak device memory so far (`device.memory_stats()`, where
the backend has it) and runs a small version of the section's computation on the device and on
the CPU (`jax.devices("cpu")[0]`) with the same keys and inputs: the agreement is the maximum
absolute difference and that difference relative to the largest CPU value. A failing section
is reported (type, message, last traceback lines) and the others still run. The results go to
`--out DIR` as `device_check.json` and `device_check.md`.

    python benchmarks/device_check.py --out benchmarks/results/device_check   # the GPU check
    python benchmarks/device_check.py --quick --out /tmp/device_check         # CPU, ~2 minutes

Imports only JAX, NumPy, Equinox, optax and numpyro_fsdiff (not ArviZ or matplotlib), and uses
no JAX API newer than 0.4.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import numpyro_fsdiff as fsd

SIZES = {
    # name: (full, quick)
    "train": (dict(size=32, batch=128, modes=14, width=32, depth=4, projection_dim=128),
              dict(size=16, batch=16, modes=4, width=8, depth=1, projection_dim=16)),
    "sampling": (dict(num=64, size=32, steps=200), dict(num=8, size=16, steps=200)),
    "log_density": (dict(steps=32, divergence="exact"),
                    dict(steps=8, divergence="hutchinson", num_probes=4)),
    "inverse": (dict(num_samples=16, steps=200), dict(num_samples=2, steps=200)),
    # The small computations run on both the device and the CPU.
    "agree_train": dict(size=16, batch=8),
    "agree_sampling": dict(num=4, size=16, steps=200),
    "agree_log_density": dict(steps=8, divergence="hutchinson", num_probes=4),
    "agree_inverse": dict(num_samples=2, steps=200),
}  # fmt: skip


def on(device, tree):
    """Every array of `tree` committed to `device` (other leaves unchanged)."""
    return jax.tree.map(lambda x: jax.device_put(x, device) if eqx.is_array(x) else x, tree)


def block(tree):
    return jax.tree.map(lambda x: x.block_until_ready() if eqx.is_array(x) else x, tree)


def timed(fn, repeats: int):
    """`(result, first-call seconds, median seconds of the next `repeats` calls)`."""
    start = time.perf_counter()
    result = block(fn())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = block(fn())
        times.append(time.perf_counter() - start)
    return result, first, statistics.median(times)


def agreement(device_out, cpu_out) -> dict:
    """Max |device - cpu| over all arrays, and that over max |cpu|."""
    a = [np.asarray(x, np.float64) for x in jax.tree.leaves(eqx.filter(device_out, eqx.is_array))]
    b = [np.asarray(x, np.float64) for x in jax.tree.leaves(eqx.filter(cpu_out, eqx.is_array))]
    diff = max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))
    scale = max(float(np.max(np.abs(y))) for y in b)
    finite = all(bool(np.all(np.isfinite(x))) for x in a)
    return dict(max_abs_diff=diff, max_rel_diff=diff / max(scale, 1e-30), device_finite=finite)


def both(fn, device, cpu) -> dict:
    """`fn(device)` on the device and on the CPU (inside `jax.default_device`), compared."""
    with jax.default_device(device):
        out_device = block(fn(device))
    with jax.default_device(cpu):
        out_cpu = block(fn(cpu))
    return agreement(out_device, out_cpu)


def peak_memory(device):
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without the call
        stats = None
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return int(stats["peak_bytes_in_use"])


def mnist():
    """The shipped MNIST checkpoint and a test image of the shipped subset, in model space."""
    ckpt = fsd.pretrained("mnist")
    image = ckpt.from_pixels(jnp.asarray(fsd.data.load_subset().images[0]))
    return ckpt, image


# --- sections -------------------------------------------------------------------------------


def train_step_run(device, size, batch, modes=4, width=8, depth=1, projection_dim=16, steps=1):
    """`steps` training steps of a fresh FNO on Matern fields; returns (state, losses)."""
    network = fsd.nn.FNO(modes=modes, width=width, depth=depth, projection_dim=projection_dim,
                         key=jax.random.key(0))  # fmt: skip
    covariance = fsd.covariance.Matern(alpha=2.0, tau=3.0)
    sde, grid = fsd.VPSDE(covariance), fsd.Grid((size, size))
    x0 = on(device, covariance.sample(jax.random.key(1), grid, (batch,)))
    optimizer, _ = fsd.TrainConfig([(size, 10_000)]).optimizer()
    state = on(device, fsd.TrainState.init(network, optimizer))
    settings = dict(optimizer=optimizer, sde=on(device, sde), grid=grid,
                    t_eps=on(device, jnp.asarray(1e-3)), ema_decay=on(device, jnp.asarray(0.999)),
                    batched=True)  # fmt: skip
    key = on(device, jax.random.key(2))

    def run(state=state):
        losses = []
        for n in range(steps):
            state, loss = fsd.train_step(state, x0, jax.random.fold_in(key, n), **settings)
            losses.append(loss)
        return state, jnp.stack(losses)

    return run


def check_train_step(args, device, cpu):
    config = SIZES["train"][args.quick]
    run = train_step_run(device, steps=1, **config)
    (state, losses), first, median = timed(run, args.repeats)
    small = SIZES["agree_train"]

    def agree(d):
        state, losses = train_step_run(d, steps=2, **small)()
        return losses, eqx.filter(state.network, eqx.is_inexact_array)

    return dict(
        config=config,
        first_call_s=first,
        compile_s=first - median,
        step_s=median,
        samples_per_s=config["batch"] / median,
        loss=float(losses[0]),
        agreement_config=small,
        agreement=both(agree, device, cpu),
    )


def sampling_run(device, ckpt, num, size, steps):
    score, sde = on(device, ckpt.model), on(device, ckpt.sde)
    grid, key = ckpt.grid((size, size)), on(device, jax.random.key(3))

    def run():
        x, _ = fsd.sample(score, sde, grid, key=key, num_samples=num, solver="euler", steps=steps)
        return x

    return run


def check_sampling(args, device, cpu):
    ckpt, _ = mnist()
    config = SIZES["sampling"][args.quick]
    x, first, median = timed(sampling_run(device, ckpt, **config), args.repeats)
    small = SIZES["agree_sampling"]
    return dict(
        config=config,
        first_call_s=first,
        compile_s=first - median,
        solve_s=median,
        fields_per_s=config["num"] / median,
        finite=bool(jnp.all(jnp.isfinite(x))),
        agreement_config=small,
        agreement=both(lambda d: sampling_run(d, ckpt, **small)(), device, cpu),
    )


def log_density_run(device, ckpt, image, steps, divergence, num_probes=1):
    prior = fsd.DiffusionPrior(
        on(device, ckpt.model), on(device, ckpt.sde), ckpt.grid((28, 28)), solver="heun",
        steps=steps, divergence=divergence, num_probes=num_probes, key=jax.random.key(4),
    )  # fmt: skip
    prior, x = on(device, prior), on(device, image)
    # The prior is a pytree argument (not a closed-over constant), as in NumPyro's inference.
    value_and_grad = jax.jit(lambda p, x: jax.value_and_grad(p.log_prob)(x))
    return lambda: value_and_grad(prior, x)


def check_log_density(args, device, cpu):
    ckpt, image = mnist()
    config = SIZES["log_density"][args.quick]
    (value, grad), first, median = timed(log_density_run(device, ckpt, image, **config),
                                         args.repeats)  # fmt: skip
    small = SIZES["agree_log_density"]
    return dict(
        config=config,
        first_call_s=first,
        compile_s=first - median,
        value_and_grad_s=median,
        evaluations_per_s=1 / median,
        log_prob=float(value),
        grad_finite=bool(jnp.all(jnp.isfinite(grad))),
        agreement_config=small,
        agreement=both(lambda d: log_density_run(d, ckpt, image, **small)(), device, cpu),
    )


def inverse_run(device, ckpt, image, num_samples, steps):
    from numpyro_fsdiff import inverse

    grid = ckpt.grid((28, 28))
    operator = inverse.GaussianBlur(1.5 / 28)
    noise = inverse.GaussianNoise(0.05)
    truth = on(device, image)
    y = operator(truth, grid) + 0.05 * jax.random.normal(jax.random.key(5), truth.shape)
    y = on(device, y)
    # The settings of `fsdiff invert --sampler dps` (the normalised guidance step).
    sampler = inverse.DPS(
        on(device, ckpt.model), on(device, ckpt.sde), num_samples=num_samples, steps=steps,
        batch_size=num_samples, weighting="normalised",
    )  # fmt: skip

    def run():
        return inverse.posterior(
            on(device, jax.random.key(6)), y, operator, None, sampler, grid=grid, noise=noise,
            truth=truth,
        )  # fmt: skip

    return run


def check_inverse(args, device, cpu):
    ckpt, image = mnist()
    config = SIZES["inverse"][args.quick]
    result, first, median = timed(inverse_run(device, ckpt, image, **config), args.repeats)
    small = SIZES["agree_inverse"]
    metrics = {k: float(v) for k, v in (result.metrics or {}).items()}
    return dict(
        config=config,
        first_call_s=first,
        compile_s=first - median,
        posterior_s=median,
        seconds_per_draw=median / config["num_samples"],
        metrics=metrics,
        agreement_config=small,
        agreement=both(lambda d: inverse_run(d, ckpt, image, **small)().mean, device, cpu),
    )


SECTIONS = {
    "train_step": check_train_step,
    "sampling": check_sampling,
    "log_density": check_log_density,
    "inverse": check_inverse,
}


# --- report ---------------------------------------------------------------------------------


def fmt(value, spec=".3g"):
    return "n/a" if value is None else format(value, spec)


def markdown(report) -> str:
    env = report["environment"]
    lines = [
        f"# Device check ({'quick, ' if report['quick'] else ''}{env['device']})",
        "",
        f"Command: `{report['command']}`",
        "",
        f"JAX {env['jax']} ({env['backend']}), numpyro_fsdiff {env['numpyro_fsdiff']}, "
        f"equinox {env['equinox']}; {env['machine']}; total {report['total_s']:.0f} s.",
        "",
        "| section | throughput | compile (s) | median call (s) | peak device memory "
        "| max abs diff vs CPU | max rel diff vs CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    units = dict(train_step=("samples_per_s", "samples/s"), sampling=("fields_per_s", "fields/s"),
                 log_density=("evaluations_per_s", "log_prob+grad/s"),
                 inverse=("seconds_per_draw", "s per DPS draw"))  # fmt: skip
    for name, section in report["sections"].items():
        if "error" in section:
            lines.append(f"| {name} | FAILED: {section['error']} | | | | | |")
            continue
        key, unit = units[name]
        agree = section.get("agreement", {})
        memory = section.get("peak_memory_bytes")
        median = section["first_call_s"] - section["compile_s"]
        lines.append(
            f"| {name} | {section[key]:.4g} {unit} | {section['compile_s']:.2f} | {median:.4g} | "
            f"{'n/a' if memory is None else f'{memory / 2**20:.0f} MiB'} | "
            f"{fmt(agree.get('max_abs_diff'))} | {fmt(agree.get('max_rel_diff'))} |"
        )
    lines += [
        "",
        "Sizes (full run; the agreement runs the `agreement_config` on both devices):",
        "",
    ]
    for name, section in report["sections"].items():
        extra = {k: v for k, v in section.items() if k in ("loss", "log_prob", "metrics",
                                                             "finite", "grad_finite")}  # fmt: skip
        lines.append(
            f"- {name}: {section.get('config')}; agreement {section.get('agreement_config')}; "
            f"{extra}"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for device_check.json and .md")
    parser.add_argument("--quick", action="store_true", help="small sizes (CPU, ~2 minutes)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after the first")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    args = parser.parse_args(argv)
    args.quick = int(args.quick)
    device, cpu = jax.devices()[0], jax.devices("cpu")[0]
    start = time.perf_counter()
    report = dict(
        command="python benchmarks/device_check.py " + " ".join(argv or sys.argv[1:]),
        quick=bool(args.quick),
        environment=dict(
            device=f"{device.platform}: {getattr(device, 'device_kind', device)}",
            backend=jax.default_backend(),
            jax=jax.__version__,
            equinox=getattr(eqx, "__version__", "?"),
            numpyro_fsdiff=getattr(fsd, "__version__", "?"),
            machine=f"{platform.machine()}, {os.cpu_count()} CPU cores",
        ),
        sections={},
    )
    for name in args.sections:
        tick = time.perf_counter()
        try:
            section = SECTIONS[name](args, device, cpu)
        except Exception as err:  # noqa: BLE001 - report it and go on with the next section
            section = dict(
                error=f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                traceback=traceback.format_exc().splitlines()[-8:],
            )
        section["peak_memory_bytes"] = peak_memory(device)
        section["section_s"] = time.perf_counter() - tick
        report["sections"][name] = section
        print(f"{name}: {json.dumps(section, default=str)}", flush=True)
    report["total_s"] = time.perf_counter() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fsd._io.write_text(out / "device_check.json", json.dumps(report, indent=1, default=str) + "\n")
    text = markdown(report)
    fsd._io.write_text(out / "device_check.md", text)
    print(text)
    return report


if __name__ == "__main__":
    main()
