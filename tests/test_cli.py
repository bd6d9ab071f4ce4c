import subprocess
import sys

import numpy as np

import numpyro_fsdiff
from numpyro_fsdiff._demo_gaussian import variance_table
from numpyro_fsdiff.cli import main


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
