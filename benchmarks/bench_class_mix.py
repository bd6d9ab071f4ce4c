"""The class mix of a checkpoint's samples under several samplers, by the shipped classifier.

Separates the model from the sampler: if a wrong class mix came from the sampler's
discretisation, a finer or different sampler would move it toward the data's.

    python benchmarks/bench_class_mix.py --checkpoint fashion-mnist \
        --samplers euler:200:sde dpm++2m-sde:40:sde dpm++3m:40:ode euler:800:sde

Prints one row per sampler: the fraction of samples in each class and the seconds it took.
"""

import argparse
import sys
import time

import jax
from bench_resolution import class_mix, load_model

import numpyro_fsdiff as fs
from numpyro_fsdiff._classifier import load_classifier


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="pretrained name or folder")
    p.add_argument("--samplers", nargs="+", default=["euler:200:sde"],
                   help="solver:steps:method (method sde or ode)")
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    ckpt, dataset = load_model(args.checkpoint)
    classifier = load_classifier(dataset)
    grid = ckpt.grid((28, 28))
    print(f"`python benchmarks/bench_class_mix.py {' '.join(argv or sys.argv[1:])}`\n")
    print("| sampler | " + " | ".join(str(k) for k in range(10)) + " | s |")
    print("|---|" + "---|" * 11)
    for spec in args.samplers:
        solver, steps, method = spec.split(":")
        tick = time.perf_counter()
        x, _ = fs.sample(ckpt.model, ckpt.sde, grid, key=jax.random.key(args.seed),
                         solver=solver, steps=int(steps), method=method,
                         num_samples=args.num, batch_size=args.batch_size)
        _, mix = class_mix(classifier, ckpt.to_pixels(x))
        row = " | ".join(f"{v:.3f}" for v in mix)
        print(f"| {spec} | {row} | {time.perf_counter() - tick:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
