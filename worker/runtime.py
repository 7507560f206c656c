"""Process-wide tuning for image work, applied once by every entry point before numpy loads.

- No BLAS is used; OpenBLAS's idle threads only cost CPU at start-up.
- OpenCV's own threads fight the process pool (one process per core) for the same cores, and
  with one process (import --jobs 1) they cost an eighth of its CPU more than they save.
- glibc hands large allocations (> 128 KiB) back to the kernel on free, so every image's
  megabyte buffers come back as fresh pages, each faulted in again: raising the mmap and trim
  thresholds keeps them in the heap for the next image (about a third of an image's CPU time).
"""

from __future__ import annotations

import ctypes
import os

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_HEAP_KEEP = 256 << 20
_done = False


def tune_process() -> None:
    global _done
    if _done:
        return
    _done = True
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                 "OPENCV_FOR_THREADS_NUM"):
        os.environ.setdefault(name, "1")
    try:
        # By soname: ctypes.util.find_library would run ldconfig in a child process.
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _HEAP_KEEP)
        libc.mallopt(_M_TRIM_THRESHOLD, _HEAP_KEEP)
    except (OSError, AttributeError):  # not glibc: keep its defaults
        pass
