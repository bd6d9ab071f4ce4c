"""Multilevel training on MNIST or Fashion-MNIST, the multilevel paper's setting, small.

Coarse to fine with one set of weights: --levels 14:N1,28:N2 trains N1 steps at 14 x 14, then
N2 at 28 x 28 (data brought to each level by spectral resampling). Writes checkpoints, a
loss-curve PNG and a sample grid to --out, exactly as `fsdiff train` does (this script calls it).
The shipped pretrained weights were made this way; their MODEL_CARD.md has the command.

    python examples/multilevel_mnist.py --dataset fashion-mnist --levels 14:200,28:100
"""

import argparse
import sys

from numpyro_fsdiff.cli import main as fsdiff

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    parser.add_argument("--levels", default="14:200,28:100")
    parser.add_argument("--covariance", default="matern:alpha=1.5,tau=10")
    parser.add_argument("--out", default="runs/multilevel-example")
    args, rest = parser.parse_known_args()
    sys.exit(fsdiff(["train", "--dataset", args.dataset, "--levels", args.levels,
                     "--covariance", args.covariance, "--out", args.out, *rest]))
