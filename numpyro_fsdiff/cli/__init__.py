"""The application on top of the library: the `fsdiff` command line and what only it needs.

The library (everything outside this package) never imports it. Here live the commands
(`demo`, `invert`, `bench-solvers`, `train`, `data fetch`), the MNIST tasks behind `invert`
and the examples, the solver-comparison harness, the training of the feature classifiers, the
model cards of the shipped weights, and the glibc allocator setting the commands apply.

Each command's flags are defined once, by one builder (`add_arguments` in the command's
module), for `fsdiff` and for the scripts in examples/
([`run_script`][numpyro_fsdiff.cli.run_script]).

User errors (bad values, missing files, a diverged run) print one line, `fsdiff: error: ...`,
and exit with status 2; `--debug` prints the traceback as well. Ctrl-C exits with status 130.
"""

import argparse
import shlex
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from .._training import TrainingDivergedError
from ._allocator import reuse_freed_memory as reuse_freed_memory
from ._solver_comparison import compare_solvers as compare_solvers
from ._tasks import NATIVE as NATIVE
from ._tasks import SAMPLERS as SAMPLERS
from ._tasks import TASKS as TASKS
from ._tasks import run_task as run_task
from ._tasks import task_operator as task_operator
from ._train_classifier import train_classifier as train_classifier
from ._train_command import model_card as model_card

USER_ERRORS = (ValueError, OSError, TrainingDivergedError)
"""What the commands report as one line (exit 2) rather than as a traceback: bad values
(`ValueError`), missing or unreadable files and failed downloads (`OSError`, which includes
`FileNotFoundError`), malformed checkpoints and data files (`ValueError`), and a diverged
training run."""


@dataclass(frozen=True)
class Command:
    """One command: its flags (`add_arguments(parser)`) and what runs them (`run(args)`)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gaussian", action="store_true",
                        help="the Gaussian-field demo (covariances, traces, forward SDE) instead")


def _run_demo(args) -> int:
    # Not named `_demo`: importing the submodule `cli._demo` would rebind that attribute.
    if args.gaussian:
        from ._demo_gaussian import run

        out = run(args.out, seed=args.seed)
        print((out / "summary.txt").read_text())
        return 0
    from ._demo import DemoSettings, run

    report = run(args.out, DemoSettings(seed=args.seed))
    print(report.read_text())
    return 0


def commands() -> dict[str, Command]:
    """Every command with flags of its own (`data` groups its actions and is added apart)."""
    from . import _invert, _solver_comparison, _train_command

    return {
        "demo": Command(
            "demo",
            "run the demo (pretrained MNIST prior end to end) and write its outputs",
            _demo_arguments,
            _run_demo,
        ),
        "invert": Command(
            "invert",
            "solve an imaging inverse problem with a diffusion prior",
            _invert.add_arguments,
            _invert.run,
            _invert.DESCRIPTION,
        ),
        "bench-solvers": Command(
            "bench-solvers",
            "compare samplers: score evaluations vs wall time vs quality",
            _solver_comparison.add_arguments,
            _solver_comparison.run_command,
            _solver_comparison.DESCRIPTION,
        ),
        "train": Command(
            "train",
            "train an FNO score on MNIST or Fashion-MNIST",
            _train_command.add_arguments,
            _train_command.run_train,
            _train_command.DESCRIPTION,
        ),
    }


def _add_debug(parser: argparse.ArgumentParser, *, default=False) -> None:
    parser.add_argument("--debug", action="store_true", default=default,
                        help="print the full traceback of an error")


def _apply_defaults(parser: argparse.ArgumentParser, defaults: dict) -> None:
    """New defaults for some flags; a required flag given a default becomes optional."""
    unknown = set(defaults) - {action.dest for action in parser._actions}
    if unknown:
        raise ValueError(f"`defaults` name no flag of this command: {sorted(unknown)}.")
    for action in parser._actions:
        if action.dest in defaults:
            action.required = False
    parser.set_defaults(**defaults)


def build_parser() -> argparse.ArgumentParser:
    """The `fsdiff` parser: one subcommand per [`Command`][numpyro_fsdiff.cli.Command]."""
    from .. import __version__
    from ._train_command import add_data_parser

    parser = argparse.ArgumentParser(
        prog="fsdiff",
        description="Function-space score-based diffusion models as NumPyro priors.",
    )
    parser.add_argument("--version", action="version", version=f"fsdiff {__version__}")
    _add_debug(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in commands().values():
        sub = subparsers.add_parser(
            command.name,
            help=command.help,
            description=command.description or command.help,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        command.add_arguments(sub)
        _add_debug(sub, default=argparse.SUPPRESS)  # `fsdiff --debug X` or `fsdiff X --debug`
        sub.set_defaults(run=command.run)
    for leaf in add_data_parser(subparsers):
        _add_debug(leaf, default=argparse.SUPPRESS)
    return parser


def _one_line(error: BaseException) -> str:
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return text or type(error).__name__


def _dispatch(args: argparse.Namespace) -> int:
    """Run a parsed command: user errors become one line and exit status 2."""
    import matplotlib

    matplotlib.use("Agg")  # the commands write figures to files; never a window
    try:
        return args.run(args)
    except USER_ERRORS as error:
        if args.debug:
            traceback.print_exc()
        print(f"fsdiff: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            traceback.print_exc()
        print("fsdiff: interrupted", file=sys.stderr)
        return 130


def main(argv=None) -> int:
    """`fsdiff [--debug] COMMAND [flags]`; returns the exit status."""
    reuse_freed_memory()  # before any JAX computation; see its docstring
    parser = build_parser()
    args = parser.parse_args(argv)
    # What the run records as its command: the arguments given here, else the process's own.
    args.argv = "fsdiff " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parser.print_help()
        return 0
    return _dispatch(args)


def run_script(name: str, argv=None, *, description: str | None = None, prog: str | None = None,
               **defaults) -> int:
    """Run the command `name` as a standalone script (the examples/ scripts): the same flags,
    checks and error handling as `fsdiff name`, with `defaults` replacing some defaults.

    **Returns:** the exit status.
    """
    command = commands()[name]
    if prog is None:
        prog = "python " + sys.argv[0]
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description or command.description or command.help,
        formatter_class=_ScriptHelpFormatter,
    )
    command.add_arguments(parser)
    _add_debug(parser)
    _apply_defaults(parser, defaults)
    args = parser.parse_args(argv)
    args.command, args.run = name, command.run
    args.argv = prog + " " + shlex.join(sys.argv[1:] if argv is None else argv)
    return _dispatch(args)


class _ScriptHelpFormatter(argparse.RawDescriptionHelpFormatter,
                           argparse.ArgumentDefaultsHelpFormatter):
    """A script's docstring as written, and each flag's default."""


if __name__ == "__main__":
    sys.exit(main())
