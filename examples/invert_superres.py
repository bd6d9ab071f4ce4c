"""Super-resolution: only the averages over a 7 x 7 grid of cells are seen (4x); noise 0.02.

The posterior is sampled on a grid of any --resolution (28, or 56 for zero-shot refinement of
a model trained at 28) with a diffusion prior; a PNG panel (truth, observation, mean, std,
samples) and a JSON report (PSNR, SSIM, 90% coverage, diagnostics) go to --out.

    python examples/invert_superres.py --dataset fashion-mnist \
        --checkpoint fashion-mnist --resolution 56
"""

from _invert_common import main

if __name__ == "__main__":
    main("superres", __doc__)
