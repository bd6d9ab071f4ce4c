"""Compare Diffrax solvers: score evaluations vs wall time vs sample quality.

Without --checkpoint the target is Gaussian with the exact score (quality: the exact 2-Wasserstein
distance); with --checkpoint mnist the shipped model is compared against the test images (energy
and Frechet classifier distances). Writes solvers.md, solvers.json and solvers.png.

    python examples/solver_comparison.py --resolution 16 --num 128
    python examples/solver_comparison.py --checkpoint mnist --resolution 28 --num 256
"""

import argparse

from numpyro_fsdiff._solver_comparison import run_comparison

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--num", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default="solvers_out")
    args = parser.parse_args()
    rows, markdown = run_comparison(args.out, checkpoint=args.checkpoint,
                                    resolution=args.resolution, num=args.num,
                                    repeats=args.repeats)
    print(markdown)
