"""Give freed memory back to the operating system between the big steps of an analysis.

numpy allocates arrays with ``malloc``. glibc serves blocks under its mmap threshold from the
heap, and that threshold grows (up to 32 MB) each time a larger mapped block is freed, so after a
first pass most of a Bundesland's per-cell arrays (26 MB each) live on the heap: freed, they stay
in the process (resident) until ``malloc_trim`` returns the free pages. Without it a second
analysis in the same process (a worker, the API, the benchmark's repeated runs) starts from the
first one's high-water mark and peaks 0.2 to 0.3 GB higher.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

_trim: Callable[[int], int] | None = None
_loaded = False


def release_free_memory() -> None:
    """``malloc_trim(0)`` where the C library is glibc; nothing elsewhere."""
    global _trim, _loaded
    if not _loaded:
        _loaded = True
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _trim = libc.malloc_trim
        except (OSError, AttributeError):  # pragma: no cover - not glibc
            _trim = None
    if _trim is not None:
        _trim(0)
