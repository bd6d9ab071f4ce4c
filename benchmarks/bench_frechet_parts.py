"""Where a classifier Frechet distance comes from: its mean and covariance terms, and the class mix.

The Frechet distance $\\|\\mu_x - \\mu_y\\|^2 + \\operatorname{tr}(\\ldots)$ of
`numpyro_fsdiff.metrics.frechet_distance` splits into the squared distance of the feature means
and the rest (the covariance term). Samples and a random training subset (the floor's first
draw) are each split against the random test reference of `bench_resolution.py`. The class
mix of the samples (by the same classifier's predictions) is compared with the training
subset's, and the samples are then resampled, with replacement, to the training subset's class
mix: if a wrong class mix made the distance, the resampled samples would score near the floor.
Resampling with replacement adds its own bias, so the training subset is bootstrapped the same
way as the control.

    python benchmarks/bench_frechet_parts.py --checkpoint mnist --data-root /work/shared/data \
        --out benchmarks/results/frechet_parts_mnist

Writes `<out>.json` and `<out>.md`.
"""

import argparse
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from bench_resolution import FrechetReference, class_mix, draw, load_model, write_results

from numpyro_fsdiff.data import load
from numpyro_fsdiff.metrics import frechet_distance


def terms(features, reference) -> dict:
    """The Frechet distance of `features` to `reference`, split into mean and covariance terms."""
    total = frechet_distance(features, reference)
    mean = float(np.sum((np.mean(features, 0) - np.mean(reference, 0)) ** 2))
    return {"total": total, "mean": mean, "covariance": total - mean}


def resampled(features, weights, reference, draws: int, seed: int) -> list[float]:
    """Frechet distances of `draws` weighted resamples (with replacement) of `features`."""
    rng = np.random.default_rng(seed)
    p = weights / weights.sum()
    return [
        frechet_distance(features[rng.choice(len(features), len(features), p=p)], reference)
        for _ in range(draws)
    ]


def row(name: str, split: dict) -> str:
    return f"| {name} | {split['total']:.2f} | {split['mean']:.2f} | {split['covariance']:.2f} |"


def spread(name: str, values: list[float]) -> str:
    return f"| {name} | {min(values):.2f}-{max(values):.2f} |"


def markdown(r) -> str:
    classes = "\n".join(
        f"| {k} | {a:.3f} | {b:.3f} |"
        for k, (a, b) in enumerate(zip(r["class_mix_samples"], r["class_mix_train"]))
    )
    return f"""# Classifier Frechet distance split into its terms ({r["dataset"]})

Command: `{r["command"]}`  
n = {r["num"]} samples ({r["steps"]} Euler-Maruyama steps, sampling seed {r["seed"]}) against
the random test reference of `bench_resolution.py`. Wall time {r["wall_time_s"]:.0f} s.

| features | total | mean term | covariance term |
|---|---|---|---|
{row("samples", r["samples"])}
{row("training subset (the floor's first draw)", r["train"])}

Resampled with replacement ({len(r["class_matched"])} draws each):

| features | Frechet (min-max) |
|---|---|
{spread("samples, resampled to the training subset's class mix", r["class_matched"])}
{spread("training subset, bootstrapped (the resampling's own bias)", r["train_bootstrap"])}

Class mix (the classifier's predictions):

| class | samples | training subset |
|---|---|---|
{classes}
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="pretrained name or folder")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--draws", type=int, default=5, help="resamples per row")
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", required=True, help="output path without extension")
    args = p.parse_args(argv)
    start = time.perf_counter()
    ckpt, dataset = load_model(args.checkpoint)
    test = load(dataset, "test", args.data_root).images
    train = load(dataset, "train", args.data_root).images
    reference = FrechetReference(dataset, test, train, args.num)
    pixels = ckpt.to_pixels(jnp.asarray(draw(ckpt, 28, args.num, args.steps, args.seed,
                                             args.batch_size)))
    samples = np.asarray(reference.embed(pixels))
    training = np.asarray(reference.embed(reference.train))
    ref = np.asarray(reference.features)
    class_samples, mix_samples = class_mix(reference.classifier, pixels)
    _, mix_train = class_mix(reference.classifier, jnp.asarray(reference.train))
    weights = (mix_train / np.maximum(mix_samples, 1.0 / args.num))[class_samples]
    result = dict(
        command="python benchmarks/bench_frechet_parts.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        dataset=dataset,
        checkpoint=args.checkpoint,
        seed=args.seed,
        num=args.num,
        steps=args.steps,
        samples=terms(samples, ref),
        train=terms(training, ref),
        class_mix_samples=mix_samples.tolist(),
        class_mix_train=mix_train.tolist(),
        class_matched=resampled(samples, weights, ref, args.draws, args.seed),
        train_bootstrap=resampled(training, np.ones(args.num), ref, args.draws, args.seed),
    )
    result["wall_time_s"] = time.perf_counter() - start
    write_results(Path(args.out), result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
