"""Every example answers --help; the training examples run end to end with tiny arguments
(those two are marked slow to keep `make test` under 10 minutes; `make test-slow` runs them)."""

import importlib.util
import re
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(p for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_example_help(script, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setattr(sys, "argv", [script.name, "--help"])
    with pytest.raises(SystemExit) as exit:
        runpy.run_path(str(script), run_name="__main__")
    assert exit.value.code == 0
    assert "usage" in capsys.readouterr().out


@pytest.mark.slow
def test_train_own_fields_runs_tiny(tmp_path):
    report = _load("train_own_fields").main(
        ["--num", "64", "--resolution", "16", "--levels", "8:4,16:4", "--width", "4",
         "--modes", "3", "--batch-size", "8", "--samples", "4", "--sample-steps", "3",
         "--out", str(tmp_path)])
    assert set(report) == {16, 32} and all(np.isfinite(v) and v >= 0 for v in report.values())
    assert (tmp_path / "samples_32.npy").exists() and (tmp_path / "fields.npy").exists()
    assert np.load(tmp_path / "samples_32.npy").shape == (4, 32, 32)


@pytest.mark.slow
def test_gaussian_mixture_toy_runs_tiny():
    errors = _load("gaussian_mixture_toy").main(
        ["--resolution", "8", "--num", "64", "--steps", "4", "--width", "4"])
    assert set(errors) == {8, 16} and all(np.isfinite(v) and v > 0 for v in errors.values())


# The examples that are a command with other defaults: (script, command).
COMMAND_SCRIPTS = [("invert_deblur", "invert"), ("invert_inpaint", "invert"),
                   ("invert_superres", "invert"), ("invert_sparse", "invert"),
                   ("gaussian_fields", "demo"), ("multilevel_mnist", "train"),
                   ("solver_comparison", "bench-solvers")]


def _flags(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", help_text))


@pytest.mark.parametrize("script, command", COMMAND_SCRIPTS)
def test_command_examples_share_the_commands_flags(script, command, monkeypatch, capsys):
    """Each such example is a thin call of `numpyro_fsdiff.cli.run_script`: its --help lists
    exactly the flags of `fsdiff <command>` (defined once, in the command's builder)."""
    from numpyro_fsdiff.cli import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    expected = _flags(capsys.readouterr().out)
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setattr(sys, "argv", [f"{script}.py", "--help"])
    with pytest.raises(SystemExit):
        runpy.run_path(str(EXAMPLES / f"{script}.py"), run_name="__main__")
    assert _flags(capsys.readouterr().out) == expected
    assert len(expected) >= 3
    source = (EXAMPLES / f"{script}.py").read_text()
    assert "add_argument" not in source and f'run_script("{command}"' in source


def test_run_script_applies_the_examples_defaults(monkeypatch):
    """`run_script` parses with the command's builder and the script's defaults (a required
    flag given a default becomes optional), and runs the command's own function."""
    from numpyro_fsdiff.cli import _invert, run_script

    seen = []
    monkeypatch.setattr(_invert, "run", lambda args: seen.append(args) or 0)
    assert run_script("invert", ["--samples", "3"], prog="x", task="sparse", sampler="dps") == 0
    args = seen[0]
    assert (args.task, args.sampler, args.samples, args.ode_steps) == ("sparse", "dps", 3, 10)
    with pytest.raises(ValueError, match=r"`defaults` name no flag of this command: \['bogus'\]"):
        run_script("invert", [], prog="x", bogus=1)
