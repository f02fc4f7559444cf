"""Process-wide settings for long event loops.

`retain_freed_memory()` stops glibc from handing large freed blocks back to the kernel. By
default glibc serves blocks above a dynamic threshold (at most 32 MiB) with fresh mmap pages and
trims the top of the heap once more than twice that threshold is free, so a loop that allocates
and drops chunk arrays of tens of MB (every stage of the toolkit works chunk by chunk) makes the
kernel fault in and zero new pages for every chunk. On the development machine that costs about
35 ns per generated event, as much as generating it. With the thresholds fixed (mmap above
32 MiB, trim above 1 GiB free), freed chunks are reused: resident memory stays at the peak of
one chunk, still flat in the number of events.

The `muone` command and `benchmarks/` call it once at start-up; a script or notebook driving the
toolkit directly can do the same. It does nothing where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # the largest value glibc accepts on 64-bit systems
TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024


def retain_freed_memory() -> bool:
    """Keep freed memory in the process for reuse (see the module docstring); True if the C
    library accepted the settings, False where it is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
