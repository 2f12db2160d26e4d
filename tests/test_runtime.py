"""Process tuning: with the mmap threshold fixed, large blocks freed in the middle of the heap go back to the OS."""

from __future__ import annotations

import ctypes.util
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
    blocks = [block(2 << 20) for _ in range(20)]
    pin = libc.malloc(64)          # above them: the heap cannot shrink from its top
    before = rss()
    for p in blocks:
        libc.free(p)
    print(before - rss())
""")


@pytest.mark.skipif(not sys.platform.startswith("linux") or not ctypes.util.find_library("c"), reason="glibc only")
def test_freed_large_blocks_are_given_back_with_the_threshold_fixed():
    def given_back(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
        return int(out.stdout)

    assert given_back("fixed") >= 36 << 20          # the 40 MB freed went back
    assert given_back("default") < 8 << 20          # what the fix is for: they stayed resident
