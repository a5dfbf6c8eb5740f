"""Keep glibc's malloc from holding on to memory the long-running service has freed.

glibc gives threads their own malloc arenas, up to 8 per core, and memory freed into an arena that another
thread's allocations keep fragmented is not returned to the system. The service creates and ends threads for
every session (aiortc's codecs, executors), so its resident memory creeps up over hours of sessions joining and
leaving while nothing leaks (``python -m bench.soak``). Two remedies, both usual for such servers: a small arena
count (``MALLOC_ARENA_MAX`` in the environment, when set, wins), and handing the freed pages of every arena back
to the system when a session ends (``malloc_trim``): glibc only trims the top of the main heap by itself, and
the codecs' frame buffers, freed in the middle of a heap, stay resident otherwise.

Resident memory says little about leaks over minutes (it swings by tens of MiB with the arenas), so the service
also reports the bytes malloc has handed out and not had back (:func:`heap_in_use`) and Python's allocated blocks:
the quantities a leak grows.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import sys
import threading

logger = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's malloc.h
DEFAULT_ARENAS = 2
_trimming = threading.Lock()


def limit_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``arenas``; False where that is not possible (not glibc) or already chosen."""
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_ARENA_MAX, arenas))
    logger.debug("[server] malloc arenas capped at %d: %s", arenas, done)
    return done


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


def heap_in_use() -> int | None:
    """Bytes malloc has handed out and not had back, in chunks and in mmapped blocks (glibc's ``mallinfo2``: uordblks
    + hblkhd); None where that is not glibc 2.33 or later. Unlike RSS it does not count free pages an arena keeps."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.argtypes = []
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return int(info.uordblks + info.hblkhd)


def release_free_memory() -> bool:
    """Free what only reference cycles still hold (a closed session's codecs, whose threads and frame pools go only
    when the cyclic collector gets to them), then return the free pages of every malloc arena to the system
    (glibc's ``malloc_trim(0)``). False where trimming is not possible (not glibc), where nothing was released, or
    while another call is at it. Takes milliseconds and the arenas' locks: call it off the event loop."""
    if not sys.platform.startswith("linux") or not _trimming.acquire(blocking=False):
        return False
    try:
        gc.collect()
        try:
            trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            return False
        trim.argtypes = [ctypes.c_size_t]
        trim.restype = ctypes.c_int
        return bool(trim(0))
    finally:
        _trimming.release()
