"""Classifier Frechet distance at 28 x 28 over several sampling seeds, paired across checkpoints.

One Frechet distance at n = 1000 moves by about 3 units between sampling seeds, so two
checkpoints are compared on the same seeds (the same starting fields x_T and noise for each)
and the paired differences get a standard error. The reference, the floor and the sampler are
those of `bench_resolution.py` (a seeded random test subset; the floor the mean over random
training subsets; `--steps` Euler-Maruyama steps with Tweedie denoising).

    python benchmarks/bench_frechet_seeds.py --checkpoints mnist /work/runs/mnist2/mnist \
        --seeds 0 1 2 3 --data-root /work/shared/data --out benchmarks/results/frechet_seeds_mnist

`--reuse earlier.json` takes a checkpoint's figures from an earlier result of this script
instead of sampling again, when that result measured the same weights (the SHA-256 of
`model.eqx` in checkpoint.json) with the same dataset, `--num`, `--steps`, `--subset-seed`
and the seeds asked for (the draws are deterministic for a seed: rerun, the
shipped checkpoints repeat their figures to every digit).

Writes `<out>.json` and `<out>.md`.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from bench_resolution import FrechetReference, draw, load_model, write_results

from numpyro_fsdiff.data import load


def markdown(result) -> str:
    names, seeds = result["checkpoints"], result["seeds"]
    table = np.array([[result["frechet"][name][str(s)] for s in seeds] for name in names])
    floor = result["floor"]
    lines = [
        "# Classifier Frechet distance at 28 x 28 over sampling seeds",
        "",
        f"Command: `{result['command']}`  ",
        f"n = {result['num']} samples per seed ({result['steps']} Euler-Maruyama steps) against "
        f"a random subset of the {result['dataset']} test images; floor {floor:.2f} (random "
        f"training subsets against it). Wall time {result['wall_time_s']:.0f} s."
        + (f" Figures of {', '.join(f'`{n}`' for n in result['reused'])} taken from `--reuse`."
           if result.get("reused") else ""),
        "",
        "| checkpoint | " + " | ".join(f"seed {s}" for s in seeds) + " | mean +- std | / floor |",
        "|---|" + "---|" * (len(seeds) + 2),
    ]
    for name, row in zip(names, table):
        lines.append(
            f"| `{name}` | " + " | ".join(f"{v:.2f}" for v in row)
            + f" | {row.mean():.2f} +- {row.std(ddof=1) if len(row) > 1 else 0:.2f} "
            f"| {row.mean() / floor:.3f} |"
        )
    if len(names) > 1:
        lines += ["", "Paired differences to the first checkpoint (mean +- standard error):", ""]
        for name, row in zip(names[1:], table[1:]):
            diff = row - table[0]
            se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
            lines.append(f"- `{name}`: {diff.mean():+.2f} +- {se:.2f}")
    return "\n".join(lines) + "\n"


def model_sha256(ckpt) -> str | None:
    """The SHA-256 of a checkpoint's weights file, as its checkpoint.json records it."""
    return ckpt.config.get("files", {}).get("model_sha256")


def reusable(args, dataset: str, shas: dict) -> dict:
    """The figures of `--reuse` for the checkpoints asked for whose weights (by SHA-256) it
    measured, where its protocol is this run's."""
    if args.reuse is None:
        return {}
    earlier = json.loads(Path(args.reuse).read_text())
    protocol = dict(dataset=dataset, num=args.num, steps=args.steps, subset_seed=args.subset_seed)
    different = {k: (earlier.get(k), v) for k, v in protocol.items() if earlier.get(k) != v}
    if different:
        raise SystemExit(f"--reuse {args.reuse}: a different protocol (there, here): {different}")
    if "model_sha256" not in earlier:
        raise SystemExit(f"--reuse {args.reuse}: it records no model_sha256 to match weights by")
    by_sha = {sha: earlier["frechet"][name] for name, sha in earlier["model_sha256"].items()}
    seeds = [str(s) for s in args.seeds]
    return {
        name: {s: by_sha[sha][s] for s in seeds}
        for name, sha in shas.items()
        if sha is not None and sha in by_sha and all(s in by_sha[sha] for s in seeds)
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoints", nargs="+", required=True,
                   help="pretrained names or folders, of one dataset")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--subset-seed", type=int, default=0)
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", required=True, help="output path without extension")
    p.add_argument("--reuse", default=None, help="an earlier result JSON to take figures from")
    args = p.parse_args(argv)
    start = time.perf_counter()
    models = [load_model(name) for name in args.checkpoints]
    datasets = {dataset for _, dataset in models}
    if len(datasets) != 1:
        p.error(f"--checkpoints must share one dataset; got {sorted(datasets)}")
    dataset = datasets.pop()
    test = load(dataset, "test", args.data_root).images
    train = load(dataset, "train", args.data_root).images
    reference = FrechetReference(dataset, test, train, args.num, args.subset_seed)
    shas = {name: model_sha256(ckpt) for name, (ckpt, _) in zip(args.checkpoints, models)}
    frechet, reused = {}, reusable(args, dataset, shas)
    for name, (ckpt, _) in zip(args.checkpoints, models):
        if name in reused:
            frechet[name] = reused[name]
            print(name, "from", args.reuse, flush=True)
            continue
        frechet[name] = {}
        for seed in args.seeds:
            x = draw(ckpt, 28, args.num, args.steps, seed, args.batch_size)
            frechet[name][str(seed)] = reference(ckpt.to_pixels(jnp.asarray(x)))
            print(name, seed, f"{frechet[name][str(seed)]:.2f}", flush=True)
    result = dict(
        command="python benchmarks/bench_frechet_seeds.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        dataset=dataset,
        checkpoints=args.checkpoints,
        seeds=args.seeds,
        num=args.num,
        steps=args.steps,
        subset_seed=args.subset_seed,
        floor=reference.summary["floor"],
        frechet=frechet,
        model_sha256=shas,
        reused=sorted(reused),
        wall_time_s=time.perf_counter() - start,
    )
    write_results(Path(args.out), result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
