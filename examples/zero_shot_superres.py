"""Zero-shot super-resolution: one set of weights sampled at 28, 56 and 112 points a side.

The pretrained MNIST (or Fashion-MNIST) FNO prior was trained at 14 x 14 and 28 x 28; the
trace-class noise and the Fourier neural operator make 56 and 112 meaningful grids for the
same model. Writes one PNG per resolution.

    python examples/zero_shot_superres.py --checkpoint mnist --num 16 --steps 200
"""

import argparse
from pathlib import Path

import jax
import numpy as np

import numpyro_fsdiff as fsd


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="mnist",
                        help="'mnist', 'fashion-mnist' or a checkpoint folder")
    parser.add_argument("--resolutions", default="28,56,112")
    parser.add_argument("--num", type=int, default=16)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", default="superres_out")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from numpyro_fsdiff._io import save_figure

    ckpt = (fsd.pretrained(args.checkpoint) if args.checkpoint in ("mnist", "fashion-mnist")
            else fsd.load_checkpoint(args.checkpoint))
    for n in (int(r) for r in args.resolutions.split(",")):
        grid = ckpt.grid((n, n))
        x, info = fsd.sample(ckpt.model, ckpt.sde, grid, key=jax.random.key(0),
                             num_samples=args.num, steps=args.steps)
        pixels = np.asarray(ckpt.to_pixels(x))
        fig, axes = plt.subplots(1, args.num, figsize=(args.num, 1.2))
        for ax, image in zip(np.atleast_1d(axes), pixels):
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            ax.axis("off")
        path = save_figure(fig, Path(args.out) / f"samples_{n}.png", dpi=100)
        plt.close(fig)
        print(f"{n} x {n}: {float(np.mean(info.num_score_evaluations)):.0f} score evaluations "
              f"per sample -> {path}")


if __name__ == "__main__":
    main()
