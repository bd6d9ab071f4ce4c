"""Inpainting: the central square [0.3, 0.7]^2 of the 28 x 28 image is hidden; noise 0.05.

The posterior is sampled on a grid of any --resolution (28, or 56 for zero-shot refinement of
a model trained at 28) with a diffusion prior; a PNG panel (truth, observation, mean, std,
samples) and a JSON report (PSNR, SSIM, 90% coverage, diagnostics) go to --out.

    python examples/invert_inpaint.py --dataset fashion-mnist \
        --checkpoint fashion-mnist --resolution 56
"""

import sys

from numpyro_fsdiff.cli import run_script

if __name__ == "__main__":
    # `fsdiff invert --task inpaint` with defaults for a quick run: the DPS baseline, 8 draws.
    sys.exit(run_script("invert", description=__doc__, task="inpaint", sampler="dps", samples=8,
                        warmup=20, steps=100, out="examples_out"))
