"""`fsdiff invert`: posterior sampling for an imaging task from the command line."""

import argparse
import json
from pathlib import Path

from ._tasks import SAMPLERS, TASKS

DESCRIPTION = (
    "Observe a test image on its native 28 x 28 grid (deblur, inpaint, 4x super-resolution or "
    "150 sparse sensors, with Gaussian noise), sample the posterior on a grid of any "
    "resolution, and write a PNG panel (truth, observation, mean, std, samples) and a JSON "
    "report (PSNR, SSIM, 90% coverage, R-hat, ESS, timings)."
)


def _int_at_least(minimum: int):
    """An argparse type: an int >= `minimum` (argparse names the flag in its message)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be an int >= {minimum}; got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an int >= {minimum}; got {text!r}")
        return value

    return parse


positive_int = _int_at_least(1)
non_negative_int = _int_at_least(0)


def non_negative_float(text: str) -> float:
    """An argparse type: a finite float >= 0 (argparse names the flag in its message)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a float >= 0; got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite float >= 0; got {text!r}")
    return value


def checkpoint_arg(text: str) -> str:
    """An argparse type: a checkpoint folder that exists, or the name of a shipped one."""
    from .._pretrained import PRETRAINED

    if text in PRETRAINED or Path(text).exists():
        return text
    raise argparse.ArgumentTypeError(
        f"no checkpoint folder {text!r} (no such path), and not the name of a shipped "
        f"checkpoint {PRETRAINED}"
    )


def folder_arg(text: str) -> str:
    """An argparse type: a folder that exists."""
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"no such folder: {text!r}")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `fsdiff invert` (and of examples/invert_*.py, with other defaults)."""
    parser.add_argument("--task", choices=TASKS, required=True)
    parser.add_argument("--checkpoint", default="mnist", type=checkpoint_arg,
                        help="a checkpoint folder, or the name of a shipped one")
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "fashion-mnist"),
                        help="where the test image comes from")
    parser.add_argument("--data-root", default=None, type=folder_arg,
                        help="folder with the IDX files (else $FSDIFF_DATA and the usual "
                        "places, then the 2,000 MNIST test images shipped with the package)")
    parser.add_argument("--image", type=int, default=0, help="index of the test image")
    parser.add_argument("--resolution", type=int, default=28,
                        help="side of the grid the unknown field lives on")
    parser.add_argument("--sampler", choices=SAMPLERS, default="smc",
                        help="smc (default): weighted sequential Monte Carlo along the reverse "
                        "SDE, asymptotically exact; dps: the fast approximate baseline; nuts: "
                        "in the flow's latent, slow on a CPU and rarely mixed")
    parser.add_argument("--samples", type=positive_int, default=None,
                        help="draws: particles for SMC (default 96), per chain for NUTS, "
                        "samples for DPS/SVI (default 50)")
    parser.add_argument("--warmup", type=positive_int, default=50, help="NUTS warm-up per chain")
    parser.add_argument("--moves", type=non_negative_int, default=None,
                        help="SMC: MALA moves per particle before each step (default 2; SMC "
                        "only); each costs what a step costs (docs/smc.md, Resample-move)")
    parser.add_argument("--islands", type=positive_int, default=None,
                        help="SMC: independent islands the particles are split into, pooled "
                        "with equal weights (default: islands of about 8, 12 for 96 particles; "
                        "SMC only; docs/smc.md, Islands)")
    parser.add_argument("--twist-variance", type=non_negative_float, default=None,
                        help="SMC: kappa, the twist's variance factor (default "
                        f"{SMC_DEFAULTS['twist_variance']}; SMC only; smaller is a sharper "
                        "pull towards the data; docs/smc.md, Twist variance)")
    parser.add_argument("--twist-crossover", type=non_negative_float, default=None,
                        help="SMC: the noise-to-signal ratio below which the twist's "
                        "variance factor returns to 1 (default "
                        f"{SMC_DEFAULTS['twist_crossover']}; SMC only; docs/smc.md, A sharper "
                        "twist)")
    parser.add_argument("--chains", type=positive_int, default=2, help="NUTS chains")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="SMC reverse-SDE steps (default 100), DPS reverse-SDE steps or "
                        "SVI/MAP optimisation steps (default 200)")
    parser.add_argument("--ode-steps", type=positive_int, default=10,
                        help="fixed steps of the probability-flow prior (NUTS/SVI/MAP)")
    parser.add_argument("--ode-solver", default="euler",
                        help="ODE solver of the probability-flow prior; Heun or Tsit5 with few "
                        "steps are unstable at t_eps (see the docs)")
    parser.add_argument("--tree-depth", type=positive_int, default=6,
                        help="NUTS maximum tree depth")
    parser.add_argument("--init-steps", type=positive_int, default=100,
                        help="Adam steps from a prior draw to each NUTS chain's start")
    parser.add_argument("--mass-matrix", default="auto",
                        choices=("auto", "adapt", "gaussian", "gauss_newton"),
                        help="NUTS mass matrix; auto: the linearised posterior ('gaussian') on "
                        "grids of up to 4096 points, else numpyro's adaptation")
    parser.add_argument("--guidance", type=float, default=1.0, help="DPS guidance weight")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="invert_out", help="output folder")


# SMC: 96 particles with 2 moves per step cost about what 256 without moves cost, and gave
# the higher PSNR in benchmarks/results/smc.md (Resample-move) and on the demo's tasks;
# islands of 8 keep the posterior's spread (docs/smc.md, Islands); twist variance 0.25
# gained 0.76-2.01 dB over 1 on the four MNIST tasks (test images 0-19, paired), with the
# same calibration on model draws (docs/smc.md, Twist variance). 0.1 gained nothing
# resolvable on Fashion-MNIST and lowers the log-evidence estimate, which a crossover buys
# back on an exact prior but not on the learned one (docs/smc.md, A sharper twist).
# `islands=None`: islands of about ISLAND_SIZE particles (`default_islands`).
SMC_DEFAULTS = dict(samples=96, steps=100, moves=2, islands=None, twist_variance=0.25,
                    twist_crossover=0.0)
OTHER_DEFAULTS = dict(samples=50, steps=200, moves=0, islands=1, twist_variance=1.0,
                      twist_crossover=0.0)
SMC_ONLY = ("moves", "islands", "twist_variance", "twist_crossover")
ISLAND_SIZE = 8


def default_islands(samples: int) -> int:
    """The most islands of at least `ISLAND_SIZE` particles that split `samples` evenly (1
    for fewer than 2 * ISLAND_SIZE particles): 12 for 96, 10 for 100."""
    return next(r for r in range(max(samples // ISLAND_SIZE, 1), 0, -1) if samples % r == 0)


def sampler_settings(args) -> tuple[int, int, int, int, float, float]:
    """`(samples, steps, moves, islands, twist_variance, twist_crossover)`: the command
    line's, else the sampler's defaults.

    **Raises:** `ValueError` when `--moves`, `--islands`, `--twist-variance` or
    `--twist-crossover` is given to a sampler other than SMC, or when the particles do not
    split evenly into the islands.
    """
    for name in SMC_ONLY:
        value = getattr(args, name)
        if args.sampler != "smc" and value is not None and value != OTHER_DEFAULTS[name]:
            flag = name.replace("_", "-")
            raise ValueError(
                f"`--{flag}` applies to `--sampler smc` only; got --{flag} "
                f"{value} with --sampler {args.sampler}."
            )
    defaults = SMC_DEFAULTS if args.sampler == "smc" else OTHER_DEFAULTS
    samples, steps, moves, islands, twist_variance, twist_crossover = (
        default if getattr(args, name) is None else getattr(args, name)
        for name, default in defaults.items()
    )
    if islands is None:
        islands = default_islands(samples)
    if samples % islands:
        raise ValueError(
            f"`--samples` {samples} must be a multiple of `--islands` {islands}: each island "
            "holds samples / islands particles."
        )
    return samples, steps, moves, islands, twist_variance, twist_crossover


def run(args) -> int:
    from ._tasks import run_task

    samples, steps, moves, islands, twist_variance, twist_crossover = sampler_settings(args)
    report = run_task(
        task=args.task, checkpoint=args.checkpoint, dataset=args.dataset,
        data_root=args.data_root, image=args.image, resolution=args.resolution,
        sampler=args.sampler, num_samples=samples, num_warmup=args.warmup,
        num_chains=args.chains, steps=steps, ode_steps=args.ode_steps,
        ode_solver=args.ode_solver, max_tree_depth=args.tree_depth, init_steps=args.init_steps,
        mass_matrix=args.mass_matrix, guidance=args.guidance, move_steps=moves,
        num_islands=islands, twist_variance=twist_variance, twist_crossover=twist_crossover,
        seed=args.seed, out=args.out,
    )
    print(json.dumps(report, indent=2))
    return 0
