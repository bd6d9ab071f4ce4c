"""Train MNIST / Fashion-MNIST checkpoints with the band-limited construction (issue #18).

The network is `FNO(..., cutoff=K)` (K = 13 for 28 x 28 data: the learned band is every
mode the 28 x 28 grid holds in both signs) and the noise covariance Q is smooth enough above K
that its part there is invisible at 112 x 112, and as rough as the earlier weights' on the band
(`--covariance split`; docs/theory.md, "Choosing Q"). Training uses
`numpyro_fsdiff.train`, time-bounded: a short probe measures the step rate (compile
included) and sizes the run to `--max-seconds`; the run itself is cut into chunks with
`stop_after` and `resume=True`, so it stops and writes its checkpoint when the time is up.
The shipped form (`model.eqx` + `checkpoint.json`, no optimiser state, < 10 MB) is exported
to `--out/<dataset>`, with the held-out DSM loss at 14 / 28 / 56 in its record.

    python benchmarks/train_resolution.py --data-root /path/to/idx --out runs/resolution \
        --datasets mnist fashion-mnist --max-seconds 240

CPU smoke test (a few steps, a few hundred images):

    python benchmarks/train_resolution.py --data-root $FSDIFF_DATA --out /tmp/tr --tiny
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import numpyro_fsdiff as fs
from numpyro_fsdiff._checkpoint import export_checkpoint, load_checkpoint, update_record
from numpyro_fsdiff._io import write_text
from numpyro_fsdiff.cli._tasks import load_checkpoint_or_pretrained
from numpyro_fsdiff.covariance import BandSplit, Matern
from numpyro_fsdiff.data import PixelScaling, load
from numpyro_fsdiff.nn import FNO

# The covariance (docs/theory.md, "Choosing Q"). Above the cutoff the law is exactly N(0, Q), so
# Q there must be smooth enough to be invisible at 112 x 112: Matern(alpha=2.5, tau=3), scaled as
# if it were the whole Q with tr(Q)/|D| = 1 on 28 x 28 ("matern25", the first choice). On the band
# the network learns to remove Q's noise, and the smooth Matern starves the band's upper modes of
# noise (measured: Frechet 2.7x the data floor against 1.6x for the rougher Q of the earlier
# weights, same sampler); "split" keeps the earlier weights' Matern(1.5, 10) on the band and the
# smooth one above it (covariance.BandSplit), the band part scaled so that tr(Q)/|D| = 1 on 28.
ALPHA, TAU, NORMALISED_ON = 2.5, 3.0, (28, 28)
BAND_ALPHA, BAND_TAU = 1.5, 10.0


def _unit_trace_scale(cov, grid, mask=None) -> float:
    lam = np.asarray(cov.eigenvalues(grid)) / grid.area
    return float(lam.sum() if mask is None else (lam * mask).sum())


def covariance(kind: str = "split", cutoff: int = 13):
    grid = fs.Grid(NORMALISED_ON)
    outside = Matern(ALPHA, TAU, float(1.0 / np.sqrt(_unit_trace_scale(Matern(ALPHA, TAU), grid))))
    if kind == "matern25":
        return outside
    band = np.asarray(fs.band_mask(grid.shape, cutoff))
    rest = _unit_trace_scale(outside, grid, 1 - band)
    inside_unit = _unit_trace_scale(Matern(BAND_ALPHA, BAND_TAU), grid, band)
    inside = Matern(BAND_ALPHA, BAND_TAU, float(np.sqrt((1.0 - rest) / inside_unit)))
    return BandSplit(inside, outside, cutoff)


def heldout(network, sde, x_heldout, resolutions=(14, 28, 56), repeats=4, seed=0) -> dict:
    """Held-out DSM loss of the score with its cutoff (`dsm_loss` reads the network's)."""
    return {
        str(n): float(
            fs.heldout_loss(
                network,
                sde,
                x_heldout,
                shape=(n, n),
                repeats=repeats,
                key=jax.random.key(seed + 12345),
            )
        )
        for n in resolutions
    }


def warm_start(network: FNO, checkpoint: str) -> FNO:
    """`network` (with its cutoff) carrying the weights of a checkpoint of the same shapes.

    The cutoff is a static field, so the weights move over leaf by leaf; a checkpoint of
    another architecture is refused by name. A checkpoint without local convolutions warm-starts
    a network with them: those start at zero (`LocalConv`), so the network starts as the
    checkpoint's function.
    """
    old = load_checkpoint_or_pretrained(checkpoint).network
    if network.local is not None and old.local is None:
        old = eqx.tree_at(lambda n: n.local, old, network.local, is_leaf=lambda x: x is None)
    old_leaves, _ = jax.tree_util.tree_flatten(old)
    new_leaves, treedef = jax.tree_util.tree_flatten(network)
    shapes = [jnp.shape(x) for x in old_leaves], [jnp.shape(x) for x in new_leaves]
    if shapes[0] != shapes[1]:
        raise ValueError(
            f"--init {checkpoint}: its network's weights do not match --modes/--width/--depth"
        )
    return jax.tree_util.tree_unflatten(treedef, old_leaves)


def model_card(summary: dict, network: dict) -> str:
    """A factual model card from the run's summary (the lead adds the benchmark numbers)."""
    losses = summary["heldout_dsm_loss"]
    rows = "\n".join(f"| {n} x {n} | {v:.4f} |" for n, v in losses.items())
    args = ", ".join(f"{k}={v}" for k, v in network.items())
    name, cutoff = summary["dataset"], summary["cutoff"]
    size_mb = summary["model_bytes"] / 1e6
    return f"""# Pretrained FNO score model: {name} (band-limited, cutoff K = {cutoff})

Load with `numpyro_fsdiff.load_checkpoint(folder)` (or `pretrained(...)` once shipped); `.model`
is the score $S_\\theta(x, t) = -x + P_K R_\\theta(P_K x, t)$ on any grid (docs/theory.md,
"A measure on functions").

- Network: `numpyro_fsdiff.nn.FNO({args})`, EMA weights; it runs on the fixed
  {2 * summary["cutoff"] + 2} x {2 * summary["cutoff"] + 2} grid.
- Noise covariance: `{summary["covariance"]}` (tr(Q)/|D| = 1 on 28 x 28).
- Training: `{summary["command"]}`; levels {summary["levels"]}, {summary["steps"]} steps,
  {summary["wall_time_s"]:.0f} s in all on `{summary["backend"]}`; probed rate
  {summary["probe_samples_per_second"]:.0f} samples/s; `model.eqx` {size_mb:.2f} MB.

Held-out DSM loss (dsm_loss with the cutoff, first test images, fixed key):

| resolution | held-out DSM loss |
|---|---|
{rows}
"""


def train_one(args, dataset: str) -> dict:
    scaling = PixelScaling()
    train_set = load(dataset, "train", args.data_root)
    test_set = load(dataset, "test", args.data_root)
    num_train = args.num_train or train_set.images.shape[0]
    x_train = np.asarray(scaling.from_pixels(jnp.asarray(train_set.images[:num_train])))
    x_heldout = np.asarray(scaling.from_pixels(jnp.asarray(test_set.images[: args.num_heldout])))
    sde = fs.VPSDE(covariance(args.covariance, args.cutoff))
    network = FNO(
        modes=args.modes,
        width=args.width,
        depth=args.depth,
        embedding_dim=64,
        projection_dim=64,
        cutoff=args.cutoff,
        local_kernel=args.local_kernel,
        key=jax.random.key(args.seed),
    )
    if args.init is not None:
        network = warm_start(network, args.init)
    common = dict(
        batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_steps=args.warmup,
        scaling=scaling,
        progress=False,
        log_every=args.log_every,
    )
    if args.level_schedule is not None:
        common["level_schedule"] = args.level_schedule
    if args.time_window is not None:
        common["time_window"] = tuple(args.time_window)
    resolutions = [int(r) for r in args.resolutions.split(",")]
    start = time.perf_counter()

    # 1. Probe: a few steps per level from scratch, compile included, in a throwaway folder.
    probe_dir = Path(args.out) / f".probe-{dataset}"
    shutil.rmtree(probe_dir, ignore_errors=True)
    probe_steps = args.probe_steps
    tick = time.perf_counter()
    probe = fs.train(network, sde, x_train, [(r, probe_steps) for r in resolutions], **common)
    probe_time = time.perf_counter() - tick
    # Steady-state rate from the logged intervals (compile apart); the rest is overhead.
    rates = [h["samples_per_second"] for h in probe.history if "samples_per_second" in h]
    rate = np.median(rates[1:] or rates) if rates else probe.step * args.batch_size / probe_time
    rate = float(rate) / args.batch_size  # steps/s
    overhead = max(0.0, probe_time - probe.step / rate)  # compile (one per train call)
    print(
        f"[{dataset}] probe: {probe.step} steps in {probe_time:.1f} s: "
        f"{rate * args.batch_size:.0f} samples/s steady, {overhead:.1f} s compile",
        flush=True,
    )

    # 2. Size the run to the time left (a margin for evaluation and export), counting one
    # compile per chunk.
    left = args.max_seconds - (time.perf_counter() - start) - args.margin_seconds
    chunks = max(1, int(np.ceil(left * rate / args.chunk_steps)))
    budget = max(0.0, left - chunks * overhead * len(resolutions))
    total = args.steps or max(len(resolutions), int(budget * rate * args.rate_factor))
    per_level = max(1, total // len(resolutions))
    levels = [(r, per_level) for r in resolutions]
    run_dir = Path(args.out) / f"run-{dataset}"
    shutil.rmtree(run_dir, ignore_errors=True)
    print(f"[{dataset}] planned levels {levels} ({left:.0f} s left)", flush=True)

    # 3. Train in chunks (resume=True), stopping when the time is up.
    step, chunk_times = 0, []
    total = per_level * len(resolutions)
    while step < total:
        chunk = min(args.chunk_steps, total - step)
        elapsed = time.perf_counter() - start
        expected = np.median(chunk_times) if chunk_times else 0.0
        if step > 0 and elapsed + expected > args.max_seconds - args.margin_seconds:
            print(f"[{dataset}] time is up at step {step} ({elapsed:.0f} s)", flush=True)
            break
        tick = time.perf_counter()
        result = fs.train(
            network,
            sde,
            x_train,
            levels,
            checkpoint_dir=run_dir,
            resume=step > 0,
            stop_after=step + chunk,
            metadata=dict(command=" ".join(sys.argv), dataset=dataset, num_train=int(num_train)),
            **common,
        )
        chunk_times.append(time.perf_counter() - tick)
        step = result.step
        rec = [h for h in result.history if "samples_per_second" in h]
        last = rec[-1] if rec else {}
        print(
            f"[{dataset}] step {step}/{total}: loss {last.get('loss', float('nan')):.4f}, "
            f"{last.get('samples_per_second', float('nan')):.0f} samples/s, "
            f"chunk {chunk_times[-1]:.1f} s",
            flush=True,
        )

    # 4. Export the model (no optimiser state) and record the held-out losses.
    out_dir = Path(args.out) / dataset
    export_checkpoint(run_dir, out_dir)
    ckpt = load_checkpoint(out_dir)
    losses = heldout(ckpt.network, ckpt.sde, x_heldout, repeats=args.repeats, seed=args.seed)
    metrics = dict(ckpt.config.get("metrics", {}))
    metrics.update(
        heldout_dsm_loss=losses, heldout_num=int(x_heldout.shape[0]), heldout_repeats=args.repeats
    )
    update_record(out_dir, metrics=metrics)
    size = (out_dir / "model.eqx").stat().st_size
    wall = time.perf_counter() - start
    summary = dict(
        dataset=dataset,
        steps=step,
        levels=levels,
        wall_time_s=wall,
        probe_samples_per_second=rate * args.batch_size,
        model_bytes=size,
        heldout_dsm_loss=losses,
        covariance=ckpt.covariance.describe(),
        cutoff=ckpt.model.cutoff,
        time_window=args.time_window,
        backend=jax.default_backend(),
        command=" ".join(sys.argv),
    )
    print(f"[{dataset}] held-out DSM loss (14/28/56): {json.dumps(losses)}", flush=True)
    print(f"[{dataset}] {json.dumps(summary)}", flush=True)
    write_text(out_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
    write_text(out_dir / "MODEL_CARD.md", model_card(summary, ckpt.network.config))
    shutil.rmtree(probe_dir, ignore_errors=True)
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=None, help="folder with the IDX files")
    p.add_argument("--out", required=True, help="output folder (one subfolder per dataset)")
    p.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"])
    p.add_argument("--max-seconds", type=float, default=240.0, help="per dataset, all included")
    p.add_argument("--margin-seconds", type=float, default=30.0, help="kept for eval/export")
    p.add_argument("--steps", type=int, default=None, help="fixed total steps (else by time)")
    p.add_argument("--resolutions", default="28", help="training levels, e.g. 14,28")
    p.add_argument("--level-schedule", default=None, help="passed to train() only if given")
    p.add_argument("--cutoff", type=int, default=13)
    p.add_argument("--covariance", choices=("split", "matern25"), default="split")
    p.add_argument("--modes", type=int, default=10)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--local-kernel", type=int, default=None, help="k x k local convolutions")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--chunk-steps", type=int, default=4000)
    p.add_argument("--probe-steps", type=int, default=150, help="per level")
    p.add_argument("--rate-factor", type=float, default=0.9, help="safety on the probed rate")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--num-train", type=int, default=None)
    p.add_argument("--num-heldout", type=int, default=500)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-window", type=float, nargs=3, default=None,
                   metavar=("FRACTION", "LOW", "HIGH"),
                   help="this share of every batch's times in [LOW, HIGH] (train's time_window)")
    p.add_argument("--init", default=None, help="warm start: checkpoint folder or name")
    p.add_argument("--tiny", action="store_true", help="CPU smoke test: tiny net, few steps")
    args = p.parse_args(argv)
    if args.tiny:
        args.width, args.depth, args.modes, args.batch_size = 4, 1, 3, 8
        args.num_train, args.num_heldout, args.repeats = 64, 16, 1
        args.probe_steps, args.chunk_steps, args.log_every = 3, 3, 1
        args.steps = args.steps or 6
    Path(args.out).mkdir(parents=True, exist_ok=True)
    summaries = [train_one(args, d) for d in args.datasets]
    write_text(Path(args.out) / "summary.json", json.dumps(summaries, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
