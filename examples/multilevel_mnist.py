"""Multilevel training on MNIST or Fashion-MNIST, the multilevel paper's setting, small.

Coarse to fine with one set of weights: --levels 14:N1,28:N2 trains N1 steps at 14 x 14, then
N2 at 28 x 28 (data brought to each level by spectral resampling). Writes checkpoints, a
loss-curve PNG and a sample grid to --out, exactly as `fsdiff train` does (this script calls it).
The shipped pretrained weights were made this way; their MODEL_CARD.md has the command.

    python examples/multilevel_mnist.py --dataset fashion-mnist --levels 14:200,28:100
"""

import sys

from numpyro_fsdiff.cli import run_script

if __name__ == "__main__":
    # `fsdiff train` with the example's smaller defaults.
    sys.exit(run_script("train", description=__doc__, levels="14:200,28:100",
                        out="runs/multilevel-example"))
