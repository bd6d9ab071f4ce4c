import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import numpyro_fsdiff
from numpyro_fsdiff.cli import main
from numpyro_fsdiff.cli._demo_gaussian import variance_table


def test_version_and_help(capsys):
    try:
        main(["--version"])
    except SystemExit as exit:
        assert exit.code == 0
    assert numpyro_fsdiff.__version__ in capsys.readouterr().out
    out = subprocess.run([sys.executable, "-m", "numpyro_fsdiff.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "usage: fsdiff" in out and "demo" in out


def test_demo_variance_table_is_measured():
    rows = variance_table(num_samples=64)
    by = {(r["covariance"], r["n"]): r for r in rows}
    # White noise grows like n^2; trace-class operators barely move from 64 to 128.
    white = [by[("white", n)]["trace"] for n in (32, 64, 128)]
    np.testing.assert_allclose(np.array(white[1:]) / np.array(white[:-1]), 4.0, rtol=1e-5)
    matern = [by[("matern(alpha=2, tau=3)", n)]["trace"] for n in (32, 64, 128)]
    assert abs(matern[2] - matern[1]) < 1e-3 * matern[2]
    for r in rows:
        assert r["sample_variance"] > 0 and np.isfinite(r["sample_variance"])


# ------------------------------------------------------------------ library and application

PACKAGE = Path(numpyro_fsdiff.__file__).parent


def test_the_library_does_not_import_the_application():
    code = ("import sys, numpyro_fsdiff, numpyro_fsdiff.inverse, numpyro_fsdiff.metrics, "
            "numpyro_fsdiff.diagnostics\n"
            "from jax._src import xla_bridge\n"
            "print('numpyro_fsdiff.cli' in sys.modules, 'matplotlib.pyplot' in sys.modules, "
            "bool(xla_bridge._backends))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    # No XLA backend either: the allocator setting of `fsdiff` must come before it starts.
    assert out == ["False", "False", "False"]


def test_only_the_application_sets_the_matplotlib_backend():
    library = [p for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts]
    assert len(library) > 20  # the scan sees the library
    offenders = [str(p.relative_to(PACKAGE)) for p in library if "matplotlib.use" in p.read_text()]
    assert offenders == []
    assert "matplotlib.use" in (PACKAGE / "cli" / "__init__.py").read_text()


@pytest.mark.parametrize("module, name", [
    ("numpyro_fsdiff", "reuse_freed_memory"), ("numpyro_fsdiff", "compare_solvers"),
    ("numpyro_fsdiff", "train_classifier"), ("numpyro_fsdiff.inverse", "run_task"),
    ("numpyro_fsdiff.inverse", "TASKS"), ("numpyro_fsdiff.inverse", "SAMPLERS"),
    ("numpyro_fsdiff.inverse", "task_operator"),
])
def test_moved_names_still_resolve_with_a_warning(module, name):
    import importlib

    import numpyro_fsdiff.cli as cli

    with pytest.warns(DeprecationWarning, match=rf"`{module}\.{name}` moved to "
                      rf"`numpyro_fsdiff\.cli\.{name}`"):
        value = getattr(importlib.import_module(module), name)
    assert value is getattr(cli, name)
    with pytest.raises(AttributeError, match="no_such_name"):
        getattr(importlib.import_module(module), "no_such_name")


# ------------------------------------------------------------------ errors a user sees


def _tiny_checkpoint(path):
    """An untrained 1-layer FNO checkpoint (step 0), for runs that check plumbing."""
    import jax

    from numpyro_fsdiff._checkpoint import save_checkpoint
    from numpyro_fsdiff.covariance import Matern
    from numpyro_fsdiff.nn import FNO

    network = FNO(modes=3, width=4, depth=1, embedding_dim=4, projection_dim=8,
                  key=jax.random.key(0))
    save_checkpoint(path, network, numpyro_fsdiff.VPSDE(Matern(alpha=2.0, tau=3.0)))
    return path


TRAIN = ["train", "--dataset", "mnist-subset", "--levels", "8:2", "--width", "4", "--modes", "3",
         "--depth", "1", "--projection-dim", "8", "--embedding-dim", "8", "--batch-size", "8",
         "--num-train", "16", "--samples", "0", "--no-progress"]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("fsdiff: error: ")
    return err[0]


def test_train_refuses_an_existing_run(tmp_path, capsys):
    run = _tiny_checkpoint(tmp_path / "run")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert main([*TRAIN, "--out", str(run)]) == 2
    line = _one_error_line(capsys)
    assert "--resume" in line and "--overwrite" in line and str(run) in line
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing touched


@pytest.mark.parametrize("flag", ["--resume", "--overwrite"])
def test_train_continues_or_replaces_an_existing_run_when_told(tmp_path, monkeypatch, flag):
    from numpyro_fsdiff.cli import _train_command

    calls = []
    monkeypatch.setattr(_train_command, "_train", lambda args, out: calls.append(args) or 0)
    run = _tiny_checkpoint(tmp_path / "run")
    assert main([*TRAIN, "--out", str(run), flag]) == 0
    assert calls[0].resume == (flag == "--resume") and calls[0].overwrite == (flag != "--resume")
    with pytest.raises(SystemExit) as exit:  # not both
        main([*TRAIN, "--out", str(run), "--resume", "--overwrite"])
    assert exit.value.code == 2


def test_a_user_error_is_one_line_and_leaves_no_empty_folder(tmp_path, capsys):
    out = tmp_path / "new" / "run"
    code = main([*TRAIN, "--covariance", "bogus:alpha=1", "--out", str(out)])
    assert code == 2
    assert "`--covariance` must start with one of" in _one_error_line(capsys)
    assert not (tmp_path / "new").exists()  # both folders it created are gone
    # --debug keeps the traceback (before or after the command)
    for argv in (["--debug", *TRAIN], [*TRAIN, "--debug"]):
        assert main([*argv, "--covariance", "bogus:alpha=1", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err
        assert err.strip().splitlines()[-1].startswith("fsdiff: error: `--covariance`")


def test_a_diverged_run_is_one_line(tmp_path, monkeypatch, capsys):
    from numpyro_fsdiff.cli import _train_command

    def diverge(*args, **kwargs):
        raise numpyro_fsdiff.TrainingDivergedError("the loss is NaN at step 3 (level 8x8).")

    monkeypatch.setattr(_train_command, "train", diverge)
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out)]) == 2
    assert _one_error_line(capsys) == "fsdiff: error: the loss is NaN at step 3 (level 8x8)."
    assert not out.exists()


def test_ctrl_c_during_training_says_how_to_resume(tmp_path, monkeypatch, capsys):
    from numpyro_fsdiff.cli import _train_command

    def interrupt(*args, checkpoint_dir, **kwargs):
        (checkpoint_dir / "checkpoint.json").write_text("{}")  # what `train` leaves behind
        raise numpyro_fsdiff.TrainingInterrupted(7, checkpoint_dir)

    monkeypatch.setattr(_train_command, "train", interrupt)
    out = tmp_path / "my run"
    assert main([*TRAIN, "--out", str(out)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    command = shlex.join(["fsdiff", *TRAIN, "--out", str(out), "--resume"])
    assert err == [f"fsdiff: interrupted at step 7; checkpoint saved in {out}; "
                   f"resume with: {command}"]
    assert (out / "checkpoint.json").exists()

    def interrupt_without_checkpoint(*args, **kwargs):
        raise numpyro_fsdiff.TrainingInterrupted(3, None)

    monkeypatch.setattr(_train_command, "train", interrupt_without_checkpoint)
    assert main([*TRAIN, "--out", str(tmp_path / "other")]) == 130
    assert capsys.readouterr().err.strip().splitlines() == [
        "fsdiff: interrupted at step 3; no checkpoint was written"]


def test_ctrl_c_elsewhere_is_one_line(monkeypatch, capsys):
    from numpyro_fsdiff.cli import _invert

    def interrupt(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(_invert, "run", interrupt)
    assert main(["invert", "--task", "deblur"]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["fsdiff: interrupted"]


@pytest.mark.parametrize("argv, named", [
    (["invert", "--task", "deblur", "--checkpoint", "/missing/path"], "/missing/path"),
    (["invert", "--task", "deblur", "--ode-steps", "0"], "--ode-steps"),
    (["invert", "--task", "deblur", "--moves", "-1"], "--moves"),
    (["invert", "--task", "deblur", "--data-root", "/nonexistent"], "--data-root"),
    (["train", "--out", "unused", "--levels", "0:2"], "--levels"),
])
def test_bad_flags_name_the_flag(argv, named, capsys):
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert named in last and "`name`" not in last and "`shape`" not in last, last


@pytest.mark.parametrize("flag", ["--moves", "--islands"])
def test_smc_flags_for_another_sampler_are_refused(flag, capsys):
    assert main(["invert", "--task", "deblur", "--sampler", "dps", flag, "2"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert flag in last and "--sampler smc" in last, last


def test_invert_never_falls_back_from_a_data_root_without_data(tmp_path, capsys):
    ckpt = _tiny_checkpoint(tmp_path / "ckpt")
    empty = tmp_path / "empty"
    empty.mkdir()
    # (tiny sampler settings, should the check ever let it through)
    assert main(["invert", "--task", "deblur", "--checkpoint", str(ckpt), "--data-root",
                 str(empty), "--sampler", "dps", "--samples", "1", "--steps", "1",
                 "--resolution", "8", "--out", str(tmp_path / "out")]) == 2
    line = _one_error_line(capsys)
    assert f"`data_root` '{empty}' holds no mnist test files" in line
    from numpyro_fsdiff.cli import run_task

    with pytest.raises(FileNotFoundError, match=r"`data_root` must be an existing folder"):
        run_task(task="deblur", checkpoint=str(ckpt), data_root=str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match=r"`checkpoint` must be a checkpoint folder.*"
                       r"'/missing/path'"):
        run_task(task="deblur", checkpoint="/missing/path")
    with pytest.raises(ValueError, match=r"`ode_steps` must be an int >= 1; got 0"):
        run_task(task="deblur", checkpoint=str(ckpt), ode_steps=0)


@pytest.mark.slow
def test_demo_runs_end_to_end_small(tmp_path):
    """`fsdiff demo`'s code path with the tiny `SMALL` settings (the real demo takes about 7
    minutes): every output file is written and the report carries the measured numbers."""
    import json

    from numpyro_fsdiff.cli._demo import SMALL, run
    from numpyro_fsdiff.cli._invert import SMC_DEFAULTS

    report = run(tmp_path, SMALL, progress=False)
    text = report.read_text()
    assert "## 3. Solver comparison" in text and "(SMC)" in text and "move acceptance" in text
    # SMALL leaves the twist to `fsdiff invert`'s default
    assert SMALL.smc_twist_variance is None and SMALL.smc_twist_crossover is None
    assert (f"twist variance {SMC_DEFAULTS['twist_variance']}, crossover "
            f"{SMC_DEFAULTS['twist_crossover']})") in text
    for n in SMALL.sample_resolutions:
        assert (tmp_path / f"samples_{n}.png").stat().st_size > 1000
    assert (tmp_path / "spectra.png").stat().st_size > 1000
    for task in SMALL.inverse_tasks:
        stem = f"{task}_smc_mnist_{SMALL.inverse_resolution}"
        assert (tmp_path / f"{stem}.png").exists()
        saved = json.loads((tmp_path / f"{stem}.json").read_text())
        assert saved["task"] == task and "log_evidence" in saved["diagnostics"]
        assert 0 <= saved["diagnostics"]["move_acceptance"] <= 1  # SMALL moves once
        assert saved["diagnostics"]["num_islands"] == SMALL.smc_islands == 2
        assert len(saved["diagnostics"]["island_log_evidence"]) == 2
        assert saved["diagnostics"]["num_distinct_ancestors"] >= 2
    record = json.loads((tmp_path / "report.json").read_text())
    assert record["wall_s"] > 0 and len(record["solvers"]) > 0
    finer = str(max(SMALL.sample_resolutions))
    assert np.isfinite(record["spectra"]["grids"][finer]["shared_ratio_median"])
    # SMALL's 4 Euler-Maruyama steps inflate the Gaussian part's variance by far more than 1%.
    assert record["spectra"]["sampler_factor"] > 1.05
    assert "ratio to the sampler's law" in text


def test_commands_survive_importing_their_modules():
    """Importing `cli._demo` (as the demo's callers do) must not replace the demo command's
    function: a submodule import rebinds the package attribute of the same name."""
    import numpyro_fsdiff.cli._demo  # noqa: F401
    from numpyro_fsdiff.cli import commands

    for command in commands().values():
        assert callable(command.run) and not isinstance(command.run, type(numpyro_fsdiff)), (
            command.name
        )
