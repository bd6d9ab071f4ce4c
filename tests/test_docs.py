"""Every ```python snippet on the docs pages and in README.md runs, page by page in one
namespace.

Pages whose snippets are intrinsically expensive (NUTS through the pretrained network's
probability flow: about 45 s of CPU) run with the slow tests (`make test-slow`)."""

import re
from pathlib import Path

import matplotlib
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
SLOW_PAGES = {"prior.md"}


def snippets(page: Path) -> list[str]:
    return FENCE.findall(page.read_text())


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT if page.parent == ROOT else ROOT / "docs"))


@pytest.mark.parametrize(
    "page",
    [
        pytest.param(p, id=_name(p), marks=[pytest.mark.slow] if _name(p) in SLOW_PAGES else [])
        for p in PAGES
        if snippets(p)
    ],
)
def test_docs_snippets_run(page, tmp_path, monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)  # snippets that write files write them here
    namespace: dict = {"__name__": "__docs__"}
    for i, code in enumerate(snippets(page)):
        try:
            exec(compile(code, f"{page.name}[snippet {i}]", "exec"), namespace)
        except Exception as error:  # report which snippet failed
            raise AssertionError(f"{page.name} snippet {i} failed: {error!r}\n{code}") from error


def test_readme_quick_start_is_the_two_commands():
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```bash\n(.*?)^```", quick, re.S | re.M)
    assert blocks == ["make demo\nmake test\n"]
    assert snippets(ROOT / "README.md")  # the Python section is collected and run above


INCLUDE = re.compile(r'^--8<-- "([^":]+):(\d+)(?::(\d+))?"$', re.M)
RESULTS = ROOT / "benchmarks" / "results"


def test_included_results_are_whole():
    """A page that includes a results file from line 3 on (all of it but its title, the
    convention for a whole file, written `file.md:3` without an end) shows all of it: a range
    that ends before the file does would drop the file's latest sections from the docs
    silently. Ranges from another line are deliberate excerpts."""
    includes = [(page, *m) for page in PAGES for m in INCLUDE.findall(page.read_text())
                if m[1] == "3"]
    assert includes, "no docs page includes a results file from line 3"
    for page, name, _, end in includes:
        lines = len((RESULTS / name).read_text().splitlines())
        assert not end or int(end) >= lines, (
            f"{_name(page)} includes {name} up to line {end}, but it has {lines} lines."
        )
