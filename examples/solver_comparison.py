"""Compare Diffrax solvers: score evaluations vs wall time vs sample quality.

Without --checkpoint the target is Gaussian with the exact score (quality: the exact 2-Wasserstein
distance); with --checkpoint mnist the shipped model is compared against the test images (energy
and Frechet classifier distances). Writes solvers.md, solvers.json and solvers.png.

    python examples/solver_comparison.py --resolution 16 --num 128
    python examples/solver_comparison.py --checkpoint mnist --resolution 28 --num 256
"""

import sys

from numpyro_fsdiff.cli import run_script

if __name__ == "__main__":
    # `fsdiff bench-solvers` with the example's smaller defaults.
    sys.exit(run_script("bench-solvers", description=__doc__, resolution=16, num=128, repeats=1,
                        out="solvers_out"))
