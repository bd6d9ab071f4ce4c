"""Every ```python snippet in a public docstring runs (the API pages are made from them).

Collected from the public names of `numpyro_fsdiff` and its public submodules (`nn`,
`covariance`, `data`, `inverse`, `metrics`, `diagnostics`), classes with their own methods and
properties. Each snippet runs on its own in a fresh namespace holding only this setup:

    import jax, jax.numpy as jnp, numpy as np, numpyro, numpyro.distributions as dist
    import numpyro_fsdiff as fsd
    from <the snippet's module> import *   # its public names, e.g. Grid or FNO

so a snippet defines everything else it uses, on tiny grids. The two that compile a training
step or a NUTS kernel (about 15 and 7 s of CPU) are marked slow (`make test-slow`); the rest take
about 20 s together.
"""

import importlib
import inspect
import re
import textwrap

import matplotlib
import pytest

MODULES = ("", "nn", "covariance", "data", "inverse", "metrics", "diagnostics")
FENCE = re.compile(r"^(?P<indent>[ \t]*)```python[ \t]*\n(?P<code>.*?)^(?P=indent)```", re.S | re.M)


def _module(name):
    return importlib.import_module("numpyro_fsdiff" + (f".{name}" if name else ""))


def public_names(module) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    return sorted(names)


def _ours(obj) -> bool:
    return (getattr(obj, "__module__", None) or "").startswith("numpyro_fsdiff")


def _members(cls):
    for name, member in vars(cls).items():
        if name.startswith("_") and name != "__call__":
            continue
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        elif isinstance(member, property):
            member = member.fget
        if callable(member) and member.__doc__:
            yield name, member


def collect() -> list[tuple[str, str, str]]:
    """`(id, module name, code)` for each snippet; each docstring once, under its first name."""
    found, seen = [], set()

    def add(label, module_name, obj):
        doc = getattr(obj, "__doc__", None)
        if not doc or id(obj) in seen:
            return
        seen.add(id(obj))
        for i, match in enumerate(FENCE.finditer(inspect.cleandoc(doc))):
            code = textwrap.dedent(match["code"])
            found.append((f"{label}[{i}]", module_name, code))

    for module_name in MODULES:
        module = _module(module_name)
        prefix = "fsd" + (f".{module_name}" if module_name else "")
        for name in public_names(module):
            obj = getattr(module, name)
            if inspect.ismodule(obj) or not (inspect.isclass(obj) or callable(obj)):
                continue
            if not _ours(obj):
                continue
            add(f"{prefix}.{name}", module_name, obj)
            if inspect.isclass(obj):
                for member_name, member in _members(obj):
                    add(f"{prefix}.{name}.{member_name}", module_name, member)
    return found


SNIPPETS = collect()
SLOW = {"fsd.train[0]", "fsd.inverse.model[0]"}


def setup_namespace(module_name: str) -> dict:
    namespace: dict = {"__name__": "__docstring_example__"}
    exec(
        "import jax\nimport jax.numpy as jnp\nimport numpy as np\nimport numpyro\n"
        "import numpyro.distributions as dist\nimport numpyro_fsdiff as fsd\n",
        namespace,
    )
    module = _module(module_name)
    namespace.update({n: getattr(module, n) for n in public_names(module)})
    return namespace


def test_snippets_are_found():
    # Guard against the collector silently finding nothing (e.g. a changed fence style).
    labels = {s[0] for s in SNIPPETS}
    assert len(labels) >= 10 and SLOW <= labels, sorted(labels)


@pytest.mark.parametrize(
    "label, module_name, code",
    [pytest.param(*s, id=s[0], marks=[pytest.mark.slow] if s[0] in SLOW else []) for s in SNIPPETS],
)
def test_docstring_example_runs(label, module_name, code, tmp_path, monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)  # snippets that write files write them here
    namespace = setup_namespace(module_name)
    try:
        exec(compile(code, label, "exec"), namespace)
    except Exception as error:
        raise AssertionError(f"{label} failed: {error!r}\n{code}") from error
