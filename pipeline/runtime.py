"""Process-wide tuning, set once by the entry points (CLI ``main``, the Dagster definitions, bench/).

:func:`tune_process` is the one knob: it sets the number of worker threads the core uses
(:func:`threads`), moves Arrow to the system allocator, fixes the C library's mmap threshold,
imports the data stack and the core with the garbage collector paused and hides their objects
from it. Library code never flips process-wide state; it only reads :func:`threads` and calls
:func:`give_back_memory` between the steps of a build. Each trick says what it buys; the figures
come from ``python bench/run.py --runs 3`` (see bench/README.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
from functools import lru_cache

_THREADS = max(1, min(2, os.cpu_count() or 1))
_TUNED = False


def tune_process(threads: int | None = None) -> None:
    """Tune this process for builds; call once, at an entry point (later calls only set ``threads``).

    ``threads``: worker threads for the geometry work (polygon scan, coverage check, unions);
    default min(2, CPU count), which the benchmark machine (2 cores) was tuned with.
    """
    global _TUNED, _THREADS
    if threads is not None:
        _THREADS = max(1, int(threads))
    if _TUNED:
        return
    _TUNED = True
    _fix_mmap_threshold()
    os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"   # read by Arrow's C++ once, before it allocates
    _freeze_imports()          # then: it imports pyarrow, geopandas and the core with the collector paused
    _use_system_allocator()


def threads() -> int:
    """Worker threads a step may use at once (see :func:`tune_process`)."""
    return _THREADS


@lru_cache(maxsize=1)
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def give_back_memory() -> bool:
    """Return freed heap pages to the OS (glibc ``malloc_trim``; elsewhere a no-op); True if done.

    GEOS and pandas free millions of small blocks; glibc keeps them in its arenas (one per
    thread), so memory freed by a worker thread is not reused by the main thread and the process
    keeps its peak size. Called between the build's steps, so the next step starts lower (about
    1 ms per 100 MB).
    """
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0))


_M_MMAP_THRESHOLD = -3         # glibc's mallopt parameter (malloc.h)
MMAP_THRESHOLD_BYTES = 1 << 20


def _fix_mmap_threshold() -> bool:
    """Serve every allocation of 1 MB or more with its own mapping, returned to the OS when freed.

    glibc raises its threshold up to 32 MB once such a block is freed, after which Arrow's read
    buffers and GEOS's large arrays come from the heap, where freed space stays resident: a pass
    over the boundary file left 40 MB of it behind the decoded polygons. Fixed at 1 MB, peaks went
    from 375-382 to 343-344 MB at 4x, for about 8 % more CPU (each large block is mapped and zeroed
    anew; 3 interleaved runs each of ``bench/jobs.py ours``, with and without
    ``MALLOC_MMAP_THRESHOLD_``; figures at other scales in bench/README.md). Elsewhere than glibc:
    a no-op, False.
    """
    libc = _libc()
    return bool(libc is not None and hasattr(libc, "mallopt")
                and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def _use_system_allocator() -> None:
    """Let Arrow allocate with the C library's malloc instead of its own mimalloc pool.

    mimalloc keeps the pages of freed Arrow buffers (the GeoParquet pages, decoded batch by batch)
    for later reuse; the core build reads each file once, so those pages only add to the peak
    (measured: 377 -> 325 MB at 1x, 870 -> 792 MB at 16x). This sets the pool pyarrow passes
    to Arrow; the allocations Arrow's C++ makes on its own (the Parquet writer's encoding
    buffers) follow ``ARROW_DEFAULT_MEMORY_POOL``, which :func:`tune_process` sets before
    pyarrow is imported: with mimalloc, writing the 16x territories as GeoParquet left 98 MB
    resident after the write (a throwaway script measuring VmRSS around ``to_parquet``).
    """
    import pyarrow as pa

    if pa.default_memory_pool().backend_name != "system":
        pa.set_memory_pool(pa.system_memory_pool())


def _freeze_imports() -> None:
    """Import the data stack and the core with the cyclic GC paused, then move every object that
    exists now (modules, classes) out of its sight.

    The collector then no longer walks the hundreds of thousands of objects that pandas, pyarrow
    and geopandas create at import, at each of its passes during a build nor at interpreter exit
    (measured: 0.3-0.5 s of a 3 s build at 1x). Objects made later are collected as usual. Paused
    during the imports, it does not walk them over and over while they are being made either: the
    core imported by this function rather than before it, then one full collection, took 0.667 s
    instead of 0.757 s (median of 15 interleaved runs of each, a `python` script timing those
    three lines; faster in 14 of the 15 pairs), with the same resident size.
    """
    import importlib

    enabled = gc.isenabled()
    gc.disable()
    try:
        # imported now, so that their import-time objects are frozen: the data stack and the core
        for name in ("geopandas", "pyarrow", f"{__package__}.steps.sequence"):
            importlib.import_module(name)
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
