"""Shared command line of the examples/invert_*.py scripts."""

import argparse
import json

from numpyro_fsdiff.inverse import SAMPLERS, run_task


def main(task: str, description: str, argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--checkpoint", default="mnist",
                        help="a checkpoint folder or the name of a shipped one")
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "fashion-mnist"))
    parser.add_argument("--data-root", default=None, help="folder with the IDX files")
    parser.add_argument("--image", type=int, default=0, help="test image index")
    parser.add_argument("--resolution", type=int, default=28,
                        help="grid side of the unknown (28, or 56 for zero-shot refinement)")
    parser.add_argument("--sampler", choices=SAMPLERS, default="dps",
                        help="dps is the fast baseline; nuts is exact but slow on a CPU")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100,
                        help="DPS reverse-SDE steps, or SVI/MAP optimisation steps")
    parser.add_argument("--ode-steps", type=int, default=10,
                        help="fixed steps of the probability-flow prior")
    parser.add_argument("--ode-solver", default="euler",
                        help="ODE solver of the probability-flow prior")
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="examples_out")
    args = parser.parse_args(argv)
    report = run_task(
        task=task, checkpoint=args.checkpoint, dataset=args.dataset, data_root=args.data_root,
        image=args.image, resolution=args.resolution, sampler=args.sampler,
        num_samples=args.samples, num_warmup=args.warmup, num_chains=args.chains,
        steps=args.steps, ode_steps=args.ode_steps, ode_solver=args.ode_solver,
        guidance=args.guidance, seed=args.seed,
        out=args.out,
    )
    print(json.dumps(report, indent=2))
    return report
