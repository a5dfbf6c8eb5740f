"""Bound glibc's malloc arenas in the long-running service.

glibc gives threads their own malloc arenas, up to 8 per core, and memory freed into an arena that another
thread's allocations keep fragmented is not returned to the system. The service creates and ends threads for
every session (aiortc's codecs, executors), so its resident memory creeps up over hours of sessions joining and
leaving while nothing leaks (``python -m bench.soak``). A small arena count is the usual remedy for such servers;
``MALLOC_ARENA_MAX`` in the environment, when set, wins.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

logger = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's malloc.h
DEFAULT_ARENAS = 2


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
