"""`fsdiff invert`: posterior sampling for an imaging task from the command line."""

import argparse
import json

from ._tasks import SAMPLERS, TASKS


def add_parser(commands) -> None:
    """Register the `invert` subcommand on an argparse subparsers object."""
    invert = commands.add_parser(
        "invert",
        help="solve an imaging inverse problem with a diffusion prior",
        description=(
            "Observe a test image on its native 28 x 28 grid (deblur, inpaint, 4x "
            "super-resolution or 150 sparse sensors, with Gaussian noise), sample the posterior "
            "on a grid of any resolution, and write a PNG panel (truth, observation, mean, std, "
            "samples) and a JSON report (PSNR, SSIM, 90% coverage, R-hat, ESS, timings)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    invert.add_argument("--task", choices=TASKS, required=True)
    invert.add_argument("--checkpoint", default="mnist",
                        help="a checkpoint folder, or the name of a shipped one")
    invert.add_argument("--dataset", default="mnist", choices=("mnist", "fashion-mnist"),
                        help="where the test image comes from")
    invert.add_argument("--data-root", default=None,
                        help="folder with the IDX files (else $FSDIFF_DATA and the usual places)")
    invert.add_argument("--image", type=int, default=0, help="index of the test image")
    invert.add_argument("--resolution", type=int, default=28,
                        help="side of the grid the unknown field lives on")
    invert.add_argument("--sampler", choices=SAMPLERS, default="nuts")
    invert.add_argument("--samples", type=int, default=50, help="draws (per chain for NUTS)")
    invert.add_argument("--warmup", type=int, default=50, help="NUTS warm-up per chain")
    invert.add_argument("--chains", type=int, default=2, help="NUTS chains")
    invert.add_argument("--steps", type=int, default=200,
                        help="SVI/MAP optimisation steps, or DPS reverse-SDE steps")
    invert.add_argument("--ode-steps", type=int, default=10,
                        help="fixed steps of the probability-flow prior (NUTS/SVI/MAP)")
    invert.add_argument("--ode-solver", default="euler",
                        help="ODE solver of the probability-flow prior; Heun or Tsit5 with few "
                             "steps are unstable at t_eps (see the docs)")
    invert.add_argument("--tree-depth", type=int, default=6, help="NUTS maximum tree depth")
    invert.add_argument("--init-steps", type=int, default=100,
                        help="Adam steps from a prior draw to each NUTS chain's start")
    invert.add_argument("--mass-matrix", default="auto",
                        choices=("auto", "adapt", "gaussian", "gauss_newton"),
                        help="NUTS mass matrix; auto: the linearised posterior ('gaussian') on "
                             "grids of up to 4096 points, else numpyro's adaptation")
    invert.add_argument("--guidance", type=float, default=1.0, help="DPS guidance weight")
    invert.add_argument("--seed", type=int, default=0)
    invert.add_argument("--out", default="invert_out", help="output folder")
    invert.set_defaults(run=run)


def run(args) -> int:
    from ._tasks import run_task

    report = run_task(
        task=args.task, checkpoint=args.checkpoint, dataset=args.dataset,
        data_root=args.data_root, image=args.image, resolution=args.resolution,
        sampler=args.sampler, num_samples=args.samples, num_warmup=args.warmup,
        num_chains=args.chains, steps=args.steps, ode_steps=args.ode_steps,
        ode_solver=args.ode_solver, max_tree_depth=args.tree_depth, init_steps=args.init_steps,
        mass_matrix=args.mass_matrix, guidance=args.guidance, seed=args.seed, out=args.out,
    )
    print(json.dumps(report, indent=2))
    return 0
