"""The `fsdiff` command line."""

import argparse
import shlex
import sys


def _demo(args) -> int:
    if args.gaussian:
        from ._demo_gaussian import run

        out = run(args.out, seed=args.seed)
        print((out / "summary.txt").read_text())
        return 0
    from ._demo import DemoSettings, run

    report = run(args.out, DemoSettings(seed=args.seed))
    print(report.read_text())
    return 0


def _add_train_parsers(commands) -> None:
    from ._train_command import add_parsers

    add_parsers(commands)


def _add_invert_parser(commands) -> None:
    from .inverse._cli import add_parser

    add_parser(commands)


def _add_bench_solvers_parser(commands) -> None:
    from ._solver_comparison import add_parser

    add_parser(commands)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="fsdiff",
        description="Function-space score-based diffusion models as NumPyro priors.",
    )
    parser.add_argument("--version", action="version", version=f"fsdiff {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="run the demo (pretrained MNIST prior end to end) and write its outputs"
    )
    demo.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--gaussian", action="store_true",
                      help="the Gaussian-field demo (covariances, traces, forward SDE) instead")
    demo.set_defaults(run=_demo)
    _add_invert_parser(commands)
    _add_bench_solvers_parser(commands)
    _add_train_parsers(commands)
    return parser


def main(argv=None) -> int:
    from ._allocator import reuse_freed_memory

    reuse_freed_memory()  # before any JAX computation; see its docstring
    parser = build_parser()
    args = parser.parse_args(argv)
    # What the run records as its command: the arguments given here, else the process's own.
    args.argv = "fsdiff " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
