"""Data-against-data Frechet distances between subsets of the MNIST / Fashion-MNIST splits.

The classifier Frechet distance at n = 1000 depends on which images are compared: MNIST's
splits are ordered (its documentation: the first 5,000 test images come from NIST's
training set and are cleaner and easier than the last 5,000), so its first test images are
not a sample of the law a model of the training split learns. This table measures the
subsets the benchmarks use against random ones.

    python benchmarks/bench_frechet_floors.py --data-root /work/shared/data \
        --out benchmarks/results/frechet_floors

Writes `<out>.json` and `<out>.md`.
"""

import argparse
import sys
from pathlib import Path

import jax.numpy as jnp
from bench_resolution import subset_orders, write_results

from numpyro_fsdiff._classifier import classifier_features, load_classifier
from numpyro_fsdiff.data import load
from numpyro_fsdiff.metrics import frechet_distance

PAIRS = [
    ("test 0-999", "test 1000-1999"),
    ("test 0-999", "train 0-999"),
    ("test 0-999", "test 5000-5999"),
    ("test 5000-5999", "test 9000-9999"),
    ("train 0-999", "train 1000-1999"),
    ("train 0-999", "train 59000-59999"),
    ("train 0-999", "test random"),
    ("test 0-999", "test random"),
    ("train random", "test random"),
]


def subsets(dataset, data_root, num, seed):
    test = load(dataset, "test", data_root).images
    train = load(dataset, "train", data_root).images
    orders = subset_orders(seed, len(test), len(train))  # bench_resolution's random subsets
    out = {}
    for split, images, order in (("test", test, orders[0]), ("train", train, orders[1])):
        for first in (0, 1000, 5000, 9000, 59000):
            if first + num <= len(images):
                out[f"{split} {first}-{first + num - 1}"] = images[first : first + num]
        out[f"{split} random"] = images[order[:num]]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"])
    p.add_argument("--seed", type=int, default=0, help="seed of the random subsets")
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", required=True, help="output path without extension")
    args = p.parse_args(argv)
    num = 1000
    result = {"command": "python benchmarks/bench_frechet_floors.py "
              + " ".join(sys.argv[1:] if argv is None else argv), "num": num, "frechet": {}}
    for dataset in args.datasets:
        clf = load_classifier(dataset)
        sets = subsets(dataset, args.data_root, num, args.seed)
        features = {k: classifier_features(clf, jnp.asarray(v)) for k, v in sets.items()}
        result["frechet"][dataset] = {
            f"{a} | {b}": float(frechet_distance(features[a], features[b])) for a, b in PAIRS
        }
    lines = [
        "# Data-against-data classifier Frechet distances (n = 1000)",
        "",
        f"Command: `{result['command']}`",
        "",
        "| images | against | " + " | ".join(args.datasets) + " |",
        "|---|---|" + "---|" * len(args.datasets),
    ]
    for a, b in PAIRS:
        values = " | ".join(f"{result['frechet'][d][f'{a} | {b}']:.2f}" for d in args.datasets)
        lines.append(f"| {a} | {b} | {values} |")
    write_results(Path(args.out), result, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
