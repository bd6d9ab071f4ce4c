"""Zero-shot samples brought back to 28 x 28: area averages against spectral resampling.

For a band-limited model the 28 x 28 point values of a sample drawn on a finer grid are its
spectral resampling to 28 (the band's modes are exact; above the band only Q's small part
and the 28 grid's Nyquist row differ). Area averaging (the issue's protocol) is a different
observable: a box filter, which damps the band's upper modes. This measures the classifier
Fréchet distance of n samples at 28 x 28 and of n samples at `--fine` brought to 28 both
ways, against the same n test images, with the train-vs-test floor of `bench_resolution.py`.

    python benchmarks/bench_zero_shot_downsampling.py --num 1000 --steps 100 \
        --out benchmarks/results/zero_shot_downsampling.md
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import numpyro_fsdiff as fs
from numpyro_fsdiff._classifier import classifier_features, load_classifier
from numpyro_fsdiff._io import write_text
from numpyro_fsdiff.data import load
from numpyro_fsdiff.metrics import frechet_distance


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--fine", type=int, default=56)
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    start = time.perf_counter()
    ckpt = fs.pretrained("mnist")
    clf = load_classifier("mnist")
    n = args.num
    test = load("mnist", "test", args.data_root).images[:n]
    train = load("mnist", "train", args.data_root).images[:n]
    ref = classifier_features(clf, jnp.asarray(test))
    floor_train = frechet_distance(classifier_features(clf, jnp.asarray(train)), ref)

    def fd(x28):
        return frechet_distance(classifier_features(clf, ckpt.to_pixels(jnp.asarray(x28))), ref)

    def draw(size, seed):
        grid = ckpt.grid((size, size))
        x, _ = fs.sample(ckpt.model, ckpt.sde, grid, key=jax.random.key(seed), num_samples=n,
                         solver="euler", steps=args.steps, batch_size=250)  # fmt: skip
        return np.asarray(x)

    x28 = draw(28, 1)
    fine = draw(args.fine, 2)
    rows = [
        ("28 x 28 samples", fd(x28)),
        (f"{args.fine} x {args.fine}, spectral resampling to 28", fd(fs.resample(fine, (28, 28)))),
        (
            f"{args.fine} x {args.fine}, area averages to 28",
            fd(fs.resample(jnp.asarray(fine), (28, 28), resampling="area")),
        ),
        ("28 x 28 samples, spectral to fine and area averages back", fd(
            fs.resample(fs.resample(jnp.asarray(x28), fine.shape[-2:]), (28, 28), resampling="area")
        )),  # fmt: skip
    ]
    lines = [
        "# Zero-shot samples back on 28 x 28: area averages against spectral resampling",
        "",
        f"Command: `python benchmarks/bench_zero_shot_downsampling.py --num {n} --steps "
        f"{args.steps} --fine {args.fine}{' --out ' + args.out if args.out else ''}`; the shipped "
        f"MNIST weights, {n} samples per row, {args.steps} Euler-Maruyama steps, Tweedie "
        f"denoising; classifier Fréchet against {n} test images; train-vs-test floor "
        f"{floor_train:.2f}. Wall time {time.perf_counter() - start:.0f} s.",
        "",
        "| samples | Fréchet | / floor | / first row |",
        "|---|---:|---:|---:|",
    ]
    for label, value in rows:
        lines.append(f"| {label} | {value:.2f} | {value / floor_train:.2f} | "
                     f"{value / rows[0][1]:.3f} |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_text(args.out, text)


if __name__ == "__main__":
    main()
