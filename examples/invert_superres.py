"""Super-resolution: only the averages over a 7 x 7 grid of cells are seen (4x); noise 0.02.

The posterior is sampled on a grid of any --resolution (28, or 56 for zero-shot refinement of
a model trained at 28) with a diffusion prior; a PNG panel (truth, observation, mean, std,
samples) and a JSON report (PSNR, SSIM, 90% coverage, diagnostics) go to --out.

    python examples/invert_superres.py --dataset fashion-mnist \
        --checkpoint fashion-mnist --resolution 56
"""

import sys

from numpyro_fsdiff.cli import run_script

if __name__ == "__main__":
    # `fsdiff invert --task superres` with defaults for a quick run: the DPS baseline, 8 draws.
    sys.exit(run_script("invert", description=__doc__, task="superres", sampler="dps", samples=8,
                        warmup=20, steps=100, out="examples_out"))
