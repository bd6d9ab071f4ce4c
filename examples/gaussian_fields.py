"""Gaussian random fields N(0, Q) across resolutions, and the forward SDE.

Samples three covariances (Matern, Laplacian power, white noise) at 32, 64 and 128 points a
side from one white-noise draw, simulates the forward SDE with Diffrax's ShARK, and writes
gaussian_fields.png, forward_sde.png and summary.txt (trace and pixel variance per grid).

    python examples/gaussian_fields.py --out gaussian_out
"""

import sys

from numpyro_fsdiff.cli import run_script

if __name__ == "__main__":
    # `fsdiff demo --gaussian`
    sys.exit(run_script("demo", description=__doc__, gaussian=True, out="gaussian_out"))
