r"""Let the C allocator keep freed memory, so that XLA on CPU stops paying for page faults."""

import ctypes
import ctypes.util

# mallopt parameters from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_NEVER = 2**31 - 1

_applied = False


def reuse_freed_memory() -> bool:
    r"""Make glibc's `malloc` keep freed memory in the process and hand it out again.

    XLA on CPU allocates the temporary buffers of every call of a compiled function afresh.
    By default glibc serves large requests with `mmap` and gives them back on `free`, so each
    call touches new pages and pays one page fault per 4 KiB: about 16,000 faults and 20 ms
    for a 64 MiB buffer on this project's 2-core machine, and about a fifth of an FNO
    training step (`benchmarks/bench_train_step.py` measures both settings). This sets

    - `mallopt(M_ARENA_MAX, 1)`: XLA's worker threads share the main arena, where large
      blocks can live;
    - `mallopt(M_MMAP_MAX, 0)`: large blocks come from the heap, not from `mmap`;
    - `mallopt(M_TRIM_THRESHOLD, 2**31 - 1)`: freed memory is not returned to the system,

    so that after the first few calls every buffer reuses pages that are already mapped. The
    price: the resident memory of the process does not shrink after a peak (the same trade as
    PyTorch's and TensorFlow's caching allocators).

    Call it once, at the start of the program and **before the first JAX computation**: the
    threads XLA starts then pick their arena on their first allocation. The `fsdiff` command
    line does this itself. Calling it again does nothing.

    **Returns:** `True` when the settings were applied (Linux with glibc), `False` where the C
    library has no `mallopt` (macOS, musl), in which case nothing changes.
    """
    global _applied
    if _applied:
        return True
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    for parameter, value in (
        (_M_ARENA_MAX, 1),
        (_M_MMAP_MAX, 0),
        (_M_TRIM_THRESHOLD, _NEVER),
    ):
        if mallopt(parameter, value) != 1:
            return False
    _applied = True
    return True
