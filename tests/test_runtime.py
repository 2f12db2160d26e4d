"""Process tuning: with the mmap threshold fixed, large blocks get their own mapping and go back to the OS when freed."""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import ctypes, ctypes.util, sys
    from pipeline import runtime

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.sbrk.restype = ctypes.c_void_p
    libc.sbrk.argtypes = [ctypes.c_ssize_t]
    if sys.argv[1] == "fixed":
        assert runtime._fix_mmap_threshold()

    def rss():
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * 4096

    def block(size):
        p = libc.malloc(size)
        ctypes.memset(p, 1, size)
        return p

    libc.free(block(8 << 20))      # glibc's own rule then serves blocks under 8 MB from the heap
    blocks = []
    for _ in range(20):
        blocks.append(block(2 << 20))
        libc.malloc(256 << 10)     # kept: a freed block below it cannot leave the heap's top
    in_heap = sum(p < libc.sbrk(0) for p in blocks)     # the heap ends at the program break
    before = rss()
    for p in blocks:
        libc.free(p)
    print(in_heap, before - rss())
""")


@pytest.mark.skipif(not sys.platform.startswith("linux") or not ctypes.util.find_library("c"), reason="glibc only")
def test_large_blocks_get_their_own_mapping_and_go_back_when_freed():
    def probe(mode: str) -> tuple[int, int]:
        out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
        in_heap, given_back = out.stdout.split()
        return int(in_heap), int(given_back)

    in_heap, given_back = probe("fixed")
    assert in_heap == 0 and given_back >= 36 << 20     # the 40 MB freed went back to the system
    in_heap, _ = probe("default")
    assert in_heap == 20             # what the fix is for: glibc put them in the heap, where freed space stays


IMPORT_PROBE = textwrap.dedent("""
    import gc, sys
    collections = []
    gc.callbacks.append(lambda phase, info: collections.append(1) if phase == "start" else None)
    if sys.argv[1] == "disabled":
        gc.disable()
    from pipeline import runtime
    collections.clear()
    runtime.tune_process()
    print(len(collections), "pipeline.steps.sequence" in sys.modules, gc.isenabled(), len(gc.get_objects()) < 100_000)
""")


@pytest.mark.parametrize("state", ["enabled", "disabled"])
def test_the_data_stack_is_imported_with_the_collector_paused_and_left_as_it_was(state):
    """tune_process imports the data stack and the core (hundreds of thousands of objects) without a
    single pass of the cyclic collector, then freezes them out of the collector's sight and puts
    the collector back as it found it."""
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE, state], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "True", str(state == "enabled"), "True"]


ARROW_PROBE = textwrap.dedent("""
    import sys
    from pipeline import runtime
    if sys.argv[1] == "tuned":
        runtime.tune_process()
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"wkb": [b"x" * 1000] * 2000}), sys.argv[2], compression="zstd")
    print(pa.mimalloc_memory_pool().max_memory(), pa.default_memory_pool().backend_name)
""")


def test_arrow_allocates_with_the_system_allocator_even_inside_its_parquet_writer(tmp_path):
    """The Parquet writer's own buffers come from Arrow's C++ default pool, not the one pyarrow
    is given: with mimalloc, their pages stayed resident after the write (98 MB at 16x)."""
    def probe(mode: str) -> list[str]:
        return subprocess.run([sys.executable, "-c", ARROW_PROBE, mode, str(tmp_path / f"{mode}.parquet")],
                              capture_output=True, text=True, check=True,
                              env={k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
                              ).stdout.split()

    assert probe("tuned") == ["0", "system"]
    untuned = probe("default")
    assert int(untuned[0]) > 0          # what the setting is for: the writer used mimalloc
