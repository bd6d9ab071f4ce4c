"""`reuse_freed_memory`: freed buffers are reused instead of being mapped afresh (glibc)."""

import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent(
    """
    import resource, sys
    from numpyro_fsdiff.cli import reuse_freed_memory
    applied = reuse_freed_memory() if sys.argv[1] == "reuse" else False
    import jax, jax.numpy as jnp
    x = jnp.ones((4096, 4096))  # 64 MiB
    double = jax.jit(lambda x: 2 * x)
    for _ in range(25):  # warm up: compile, and let the heap grow to its working size
        out = jax.block_until_ready(double(x))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        out = jax.block_until_ready(double(x))
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert float(out[0, 0]) == 2.0
    print(applied, faults)
    """
)


def probe(mode: str) -> tuple[bool, int]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120,
        check=True,
    )
    applied, faults = result.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_reused_without_page_faults():
    applied, faults_reused = probe("reuse")
    assert applied
    _, faults_default = probe("default")
    # A fresh 64 MiB output is 16,384 pages of 4 KiB: ten calls map ten buffers' worth of new
    # pages by default; with reuse almost every call gets pages that are already mapped (the
    # heap still settles now and then: at most one fresh buffer in 10 calls in 10 runs here).
    assert faults_default > 9 * 16384
    assert faults_reused <= 3 * 16384


def test_calling_it_again_is_harmless():
    from numpyro_fsdiff.cli import reuse_freed_memory

    first = reuse_freed_memory()
    assert reuse_freed_memory() == first
