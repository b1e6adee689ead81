"""How the trainer uses the CPU: the BLAS thread count, one shared pool of worker threads, and
the C allocator's handling of freed memory.

* `blas_threads(n)` sets the thread count of the BLAS NumPy is linked against (OpenBLAS, found
  among the process's loaded libraries) for the duration of a `with` block. A training step runs
  its row groups on the worker threads with one BLAS thread each (`Model.loss_and_grad`): two
  BLAS calls side by side, each on its own core, and the NumPy work between them split too,
  instead of BLAS's threads for the products and one core for everything else (BLAS threads
  left idle also spin, against the other jobs of a shared machine). `blas_control()` tells
  whether the count can be set at all.
* `pool()` is the trainer's worker pool (as many threads as cores, at most `MAX_WORKERS`); NumPy
  and BLAS release the GIL, so the workers run on all cores.
* `keep_freed_memory()` asks glibc's malloc to keep freed memory in the process: a step
  allocates and frees the same activations every time, and memory handed back to the kernel
  comes back as fresh zero pages, one page fault per 4 KiB (15% of a step's CPU time in a VM).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor

MAX_WORKERS = 2

# (set, get, core name) symbols of the OpenBLAS builds NumPy ships with or links against
_BLAS_SYMBOLS = (("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_",
                  "scipy_openblas_get_corename64_"),
                 ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads", "scipy_openblas_get_corename"),
                 ("openblas_set_num_threads64_", "openblas_get_num_threads64_", "openblas_get_corename64_"),
                 ("openblas_set_num_threads", "openblas_get_num_threads", "openblas_get_corename"))

_lock = threading.Lock()
_blas = None      # (set, get, name), () when not found, None before the first look
_pool = None
_pool_pid = None
_malloc_done = False


def _find_blas():
    import numpy  # noqa: F401 - the BLAS library is loaded with NumPy

    paths = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                path = line.split(maxsplit=5)[-1].strip()
                if "openblas" in os.path.basename(path).lower() and path not in paths:
                    paths.append(path)
    except OSError:
        return ()
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name, core_name in _BLAS_SYMBOLS:
            if hasattr(lib, set_name) and hasattr(lib, get_name):
                setter, getter = getattr(lib, set_name), getattr(lib, get_name)
                setter.argtypes, setter.restype = [ctypes.c_int], None
                getter.argtypes, getter.restype = [], ctypes.c_int
                core = getattr(lib, core_name, None)
                name = "OpenBLAS"
                if core is not None:
                    core.argtypes, core.restype = [], ctypes.c_char_p
                    name += f" ({core().decode('ascii', 'replace')} kernels)"
                return setter, getter, name
    return ()


def blas_control() -> bool:
    """Whether the BLAS thread count can be set (NumPy linked against OpenBLAS)."""
    global _blas
    with _lock:
        if _blas is None:
            _blas = _find_blas()
    return bool(_blas)


def blas_thread_count() -> int | None:
    """The BLAS thread count now, or None when it cannot be read."""
    return _blas[1]() if blas_control() else None


def blas_name() -> str:
    """"OpenBLAS (Haswell kernels)", or "unknown" when the thread count cannot be set."""
    return _blas[2] if blas_control() else "unknown"


@contextlib.contextmanager
def blas_threads(n: int):
    """Run the block with n BLAS threads (a no-op when the count cannot be set)."""
    if not blas_control():
        yield
        return
    setter, getter, _ = _blas
    before = getter()
    if before != n:
        setter(n)
    try:
        yield
    finally:
        if before != n:
            setter(before)


def workers() -> int:
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


def pool() -> ThreadPoolExecutor:
    """The shared worker pool (created on first use, and again in a forked child, which has
    none of its parent's threads; they live as long as the process)."""
    global _pool, _pool_pid
    with _lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max_workers=workers(), thread_name_prefix="trainer")
            _pool_pid = os.getpid()
    return _pool


def keep_freed_memory() -> bool:
    """Make glibc keep freed blocks for reuse instead of unmapping or trimming them. Returns
    whether it applied (False on a C library without mallopt)."""
    global _malloc_done
    if _malloc_done:
        return True
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
    # blocks up to 32 MiB (glibc's largest threshold) come from the heap and are reused, up to
    # 1 GiB of free memory at the heap's top is kept, and the worker threads share the main heap
    # (a thread's own arena gives its memory back all the same: 2,000 page faults a step)
    ok = (mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 and mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1
          and mallopt(M_ARENA_MAX, 1) == 1)
    _malloc_done = ok
    return ok
