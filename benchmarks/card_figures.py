"""The model card's figures for an exported checkpoint: `samples.png` and `loss.png`.

`samples.png`: 64 samples at 28 x 28 and 16 at 56 x 56 and 112 x 112 (reverse SDE, 100
Euler-Maruyama steps, Tweedie denoising), from `fsdiff train`'s `plot_samples`; `loss.png`: the
training and held-out loss of the run's history (`plot_loss`), read from the run folder.

    python benchmarks/card_figures.py --checkpoint runs/res/mnist --run runs/res/run-mnist
"""

import argparse
import json
from pathlib import Path

import jax

import numpyro_fsdiff as fs
from numpyro_fsdiff.cli._train_command import plot_loss, plot_samples


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="the exported folder (figures go there)")
    p.add_argument("--run", required=True, help="the training run folder (its history)")
    p.add_argument("--steps", type=int, default=100)
    args = p.parse_args(argv)
    out = Path(args.checkpoint)
    ckpt = fs.load_checkpoint(out)
    panels = {}
    for n, num in ((28, 64), (56, 16), (112, 16)):
        x, _ = fs.sample(ckpt.model, ckpt.sde, ckpt.grid((n, n)), key=jax.random.key(7),
                         num_samples=num, solver="euler", steps=args.steps)  # fmt: skip
        panels[f"{n}x{n} (reverse SDE, {args.steps} Euler steps)"] = ckpt.to_pixels(x)
    plot_samples(panels, out / "samples.png")
    history = json.loads((Path(args.run) / "checkpoint.json").read_text())["history"]
    plot_loss(history, out / "loss.png")
    print(f"wrote {out / 'samples.png'} and {out / 'loss.png'}")


if __name__ == "__main__":
    main()
