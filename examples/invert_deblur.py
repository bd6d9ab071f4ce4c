"""Deblurring: a Gaussian blur of width 1.5/28 observed on the 28 x 28 grid with noise 0.05.

The posterior is sampled on a grid of any --resolution (28, or 56 for zero-shot refinement of
a model trained at 28) with a diffusion prior; a PNG panel (truth, observation, mean, std,
samples) and a JSON report (PSNR, SSIM, 90% coverage, diagnostics) go to --out.

    python examples/invert_deblur.py --dataset fashion-mnist \
        --checkpoint fashion-mnist --resolution 56
"""

import sys

from numpyro_fsdiff.cli import run_script

if __name__ == "__main__":
    # `fsdiff invert --task deblur` with defaults for a quick run: the DPS baseline, 8 draws.
    sys.exit(run_script("invert", description=__doc__, task="deblur", sampler="dps", samples=8,
                        warmup=20, steps=100, out="examples_out"))
