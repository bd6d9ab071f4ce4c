"""docs/errors.md: every row of its tables is run here, and what it prints must be what the page
says, word for word.

The page's own setup snippet (the one ```python block) defines the names the Python rows use;
the command-line rows run in a folder where `runs/old` holds a training run and `empty/` is an
empty folder. After changing a message, regenerate the second column with

    PYTHONPATH=. python tests/test_errors_doc.py

and read the diff: it shows every message that changed.
"""

import contextlib
import io
import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "errors.md"
ROW = re.compile(r"^\| ``(?P<input>.+?)`` \| ``(?P<output>.+?)`` \|$", re.M)
SETUP = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def rows(text: str) -> list[tuple[str, str]]:
    return [(m["input"], m["output"]) for m in ROW.finditer(text)]


def make_world(folder: Path) -> None:
    """`runs/old`: a training run (a tiny untrained checkpoint); `empty/`: an empty folder."""
    import jax

    import numpyro_fsdiff as fsd
    from numpyro_fsdiff._checkpoint import save_checkpoint
    from numpyro_fsdiff.covariance import Matern

    network = fsd.nn.FNO(
        modes=3, width=4, depth=1, embedding_dim=4, projection_dim=8, key=jax.random.key(0)
    )
    save_checkpoint(folder / "runs" / "old", network, fsd.VPSDE(Matern(alpha=2.0, tau=3.0)))
    (folder / "empty").mkdir()


def run_command(command: str) -> str:
    """The last line `fsdiff ...` writes to stderr (the error line; argparse puts its usage
    before it)."""
    from numpyro_fsdiff.cli import main

    words = shlex.split(command)
    assert words[0] == "fsdiff", command
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(words[1:])
        except SystemExit as exit:
            code = exit.code
    assert code == 2, (command, code, err.getvalue())
    return err.getvalue().strip().splitlines()[-1]


def run_python(expression: str, namespace: dict) -> str:
    """`Type: message` of the exception that `expression` raises."""
    try:
        exec(compile(expression, "<errors.md row>", "exec"), namespace)
    except Exception as error:  # the row exists to raise
        return f"{type(error).__name__}: {error}"
    raise AssertionError(f"{expression!r} raised nothing")


def actual_outputs(text: str, folder: Path) -> list[tuple[str, str, str]]:
    """`(input, documented, actual)` for every row, run in `folder`."""
    namespace: dict = {"__name__": "__errors__"}
    for code in SETUP.findall(text):
        exec(compile(code, "errors.md setup", "exec"), namespace)
    make_world(folder)
    found = []
    for given, documented in rows(text):
        if given.startswith("fsdiff "):
            found.append((given, documented, run_command(given)))
        else:
            found.append((given, documented, run_python(given, namespace)))
    return found


def test_the_page_has_rows_for_both_tables():
    found = rows(PAGE.read_text())
    commands = [g for g, _ in found if g.startswith("fsdiff ")]
    assert len(commands) >= 8 and len(found) - len(commands) >= 10


def test_every_row_prints_what_the_page_says(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    mismatches = [(g, d, a) for g, d, a in actual_outputs(PAGE.read_text(), tmp_path) if d != a]
    assert not mismatches, (
        "\n".join(f"{g}\n  page:   {d}\n  actual: {a}" for g, d, a in mismatches)
        + "\n(regenerate with `python tests/test_errors_doc.py`)"
    )


def _rewrite() -> None:  # pragma: no cover - a maintenance script
    import os
    import tempfile

    text = PAGE.read_text()
    with tempfile.TemporaryDirectory() as folder:
        here = os.getcwd()
        os.chdir(folder)
        try:
            found = actual_outputs(text, Path(folder))
        finally:
            os.chdir(here)
    for given, documented, actual in found:
        if "``" in actual or "|" in actual:
            sys.exit(f"cannot put this message in a table cell: {actual!r}")
        old, new = f"| ``{given}`` | ``{documented}`` |", f"| ``{given}`` | ``{actual}`` |"
        text = text.replace(old, new)
    PAGE.write_text(text)
    print(f"rewrote {len(found)} rows of {PAGE}")


if __name__ == "__main__":
    _rewrite()
