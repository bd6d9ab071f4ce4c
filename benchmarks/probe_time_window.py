"""Does more training weight on the times where a sample's class is decided fix the class mix?

`bench_class_drift.py` puts the Fashion-MNIST model's wrong class mix in t in [0.3, 0.6]. This
probe fine-tunes the shipped weights for `--steps` AdamW steps (`TrainConfig`'s optimiser,
`BatchSchedule`'s batches, `train_step` with a `fs.TimeWindow`) in which a share `--fraction` of
every batch draws its time uniformly in [`--low`, `--high`] and the rest uniformly in
[t_eps, T] (`--fraction 0` is the control: the uniform draw of `train`). It then reports the
held-out DSM loss (uniform times) and the class mix of `--num` draws (`dpm++2m-sde`, 40
steps, key 0).

    python benchmarks/probe_time_window.py --checkpoint fashion-mnist --steps 2000 --fraction 0.5
    python benchmarks/probe_time_window.py --checkpoint fashion-mnist --steps 2000 --fraction 0

`--save DIR` writes the fine-tuned weights as a checkpoint folder (for `bench_frechet_seeds.py`).
"""

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from bench_resolution import class_mix, load_model

import numpyro_fsdiff as fs
from numpyro_fsdiff._checkpoint import save_checkpoint
from numpyro_fsdiff._classifier import load_classifier
from numpyro_fsdiff.data import load


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="fashion-mnist")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--fraction", type=float, default=0.5)
    p.add_argument("--low", type=float, default=0.3)
    p.add_argument("--high", type=float, default=0.7)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--num", type=int, default=2000, help="draws for the class mix")
    p.add_argument("--data-root", default=None)
    p.add_argument("--save", default=None, help="write the fine-tuned EMA weights to this folder")
    args = p.parse_args(argv)
    ckpt, dataset = load_model(args.checkpoint)
    sde, grid = ckpt.sde, ckpt.grid((28, 28))
    train_images = load(dataset, "train", args.data_root).images
    x_train = np.asarray(ckpt.from_pixels(jnp.asarray(train_images)))
    x_test = ckpt.from_pixels(jnp.asarray(load(dataset, "test", args.data_root).images[:500]))
    config = fs.TrainConfig([(28, args.steps)], learning_rate=args.lr, batch_size=args.batch_size)
    optimizer, _ = config.optimizer()
    state = fs.TrainState.init(ckpt.network, optimizer)
    sampler = fs.TimeWindow(args.fraction, args.low, args.high, t_eps=config.t_eps, T=sde.T)
    batches = fs.BatchSchedule(config, num=x_train.shape[0])
    tick = time.perf_counter()
    for step in range(args.steps):
        batch = jnp.asarray(x_train[batches.indices(step)[1]])
        state, loss = fs.train_step(state, batch, jax.random.fold_in(config.key, step),
                                    optimizer=optimizer, sde=sde, grid=grid, batched=True,
                                    time_sampler=sampler)
        if step % 500 == 0:
            print(f"step {step}: loss {float(loss):.4f} ({time.perf_counter() - tick:.0f} s)",
                  flush=True)
    train_seconds = time.perf_counter() - tick
    if args.save:
        save_checkpoint(args.save, state.ema, sde, scaling=ckpt.scaling, lengths=ckpt.lengths,
                        step=args.steps, extra=dict(metadata=dict(dataset=dataset)))
    heldout = fs.heldout_loss(state.ema, sde, x_test, shape=(28, 28), repeats=4,
                              key=jax.random.key(12345))
    x, _ = fs.sample(fs.NoisePredictionScore(state.ema, sde), sde, grid, key=jax.random.key(0),
                     solver="dpm++2m-sde", steps=40, num_samples=args.num, batch_size=250)
    _, mix = class_mix(load_classifier(dataset), ckpt.to_pixels(x))
    print(json.dumps(dict(command="python benchmarks/probe_time_window.py "
                          + " ".join(argv or sys.argv[1:]), heldout_dsm_loss_28=heldout,
                          class_mix=np.round(mix, 3).tolist(), train_seconds=round(train_seconds))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
