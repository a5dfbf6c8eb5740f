"""The service hands memory it freed back to the system (streamer.malloc), checked in a fresh interpreter whose
heap is shaped as a session's codecs leave it: large frame buffers freed in the middle of the heap."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

PROBE = r"""
import ctypes, json
from streamer.malloc import release_free_memory

libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def rss_mib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

# Freeing one large buffer raises glibc's mmap threshold (as codecs freeing frames do), so later buffers of
# 1 MiB come from the heap; a small allocation after each keeps the heap's top in use, so only a trim of the
# free pages in the middle can give them back.
libc.free(libc.malloc(16 << 20))
big, pins = [], []
for _ in range(160):
    buffer = libc.malloc(1 << 20)
    ctypes.memset(buffer, 1, 1 << 20)
    big.append(buffer)
    pins.append(libc.malloc(4096))
full = rss_mib()
for buffer in big:
    libc.free(buffer)
freed = rss_mib()
released = release_free_memory()
print(json.dumps({"full": full, "freed": freed, "trimmed": rss_mib(), "released": released}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim is Linux-only")
def test_memory_freed_by_a_session_goes_back_to_the_system() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                         check=True)
    rss = json.loads(out.stdout)
    assert rss["full"] - rss["freed"] < 40, f"glibc gave the buffers back by itself; the probe proves nothing: {rss}"
    assert rss["released"], rss
    assert rss["freed"] - rss["trimmed"] > 120, f"the freed 160 MiB stayed resident: {rss}"


HEAP_PROBE = r"""
import ctypes, gc, json
from streamer.malloc import heap_in_use, release_free_memory

libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

class Cycle:  # what a closed session's codecs are: memory only the cyclic collector frees
    def __init__(self): self.me, self.buffer = self, bytearray(64 << 20)

gc.disable()  # as when nothing allocates: a cycle waits for a collection that does not come by itself
base = heap_in_use()
held = [libc.malloc(1 << 20) for _ in range(32)]
grown = heap_in_use()
for buffer in held:
    libc.free(buffer)
Cycle()
cycle = heap_in_use()
release_free_memory()
print(json.dumps({"base": base, "grown": grown, "cycle": cycle, "after": heap_in_use()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallinfo2 is Linux-only")
def test_heap_in_use_counts_what_is_held_and_a_session_close_frees_cycles() -> None:
    """The heap in use (/healthz runtime.heap_mib, the soak's leak measure) follows memory held and freed, and the
    release at a session's close frees memory that only a reference cycle held."""
    out = subprocess.run([sys.executable, "-c", HEAP_PROBE], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=60, check=True)
    heap = {k: v / 2**20 for k, v in json.loads(out.stdout).items()}
    assert heap["grown"] - heap["base"] >= 32, heap
    assert heap["cycle"] - heap["base"] >= 60, f"the cycle's 64 MiB are not counted: {heap}"
    assert heap["after"] - heap["base"] < 4, f"the cycle's memory is still held after the release: {heap}"
