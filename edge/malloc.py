"""glibc malloc settings for a rig that runs for hours.

Camera frames (77 KB at 320x240, 300 KB at 640x480) are allocated on the camera thread
and freed on the spotter's or the recorder's. Under glibc each thread allocates from its
own arena (up to 8 per core) and a freed block goes back to the arena it came from, so
many arenas each keep the high-water mark of the queues their thread fed. Two arenas
bound that.

The mmap threshold is fixed at 1 MiB. Frame-sized blocks then come from the heap and
are reused: an mmap'd 77 KB block costs 19 page faults on first touch and a munmap on
free, with the GIL held (48 us against 2 us per copy; the rig at 200 fps took 27k page
faults/s with a 64 KiB threshold, 13k with 1 MiB). The recorder's multi-MB chunk
buffers stay above it, so they go back to the OS when freed; glibc's dynamic threshold
would climb to their size after the first one and keep them in the heap. Call
:func:`tune` before any thread starts; variables the user set (``MALLOC_ARENA_MAX``,
``MALLOC_MMAP_THRESHOLD_``) win.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3  # glibc malloc.h
M_ARENA_MAX = -8
ARENA_MAX = 2
MMAP_THRESHOLD_BYTES = 1024 * 1024


def tune() -> str:
    """Apply the settings; returns what was done, for the log."""
    if not sys.platform.startswith("linux"):
        return "malloc: not Linux, left as is"
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "malloc: not glibc, left as is"
    done = []
    if "MALLOC_ARENA_MAX" not in os.environ and mallopt(M_ARENA_MAX, ARENA_MAX):
        done.append(f"arenas {ARENA_MAX}")
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ and mallopt(M_MMAP_THRESHOLD,
                                                              MMAP_THRESHOLD_BYTES):
        done.append(f"mmap threshold {MMAP_THRESHOLD_BYTES // 1024} KiB")
    return "malloc: " + (", ".join(done) if done else "environment settings kept")
