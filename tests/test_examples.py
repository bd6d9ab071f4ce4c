"""Every example answers --help; the training examples run end to end with tiny arguments
(those two are marked slow to keep `make test` under 10 minutes; `make test-slow` runs them)."""

import importlib.util
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
