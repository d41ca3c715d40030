"""glibc's malloc, tuned so that memory the server frees goes back to the system.

Not why resident memory grew (issue 21): that was a reference cycle keeping computed values alive until a
full garbage collection (see ``_FlightToken`` in :mod:`server.services.runtime.cache`). With the cycle
gone, RSS levels off under glibc's defaults too; these settings keep it lower: bench/bench_soak.py, 16
photos + 16 digits, 10 passes, measured side by side on the loaded 2-core machine: 1305 MB flat from pass
2 tuned, 1377 MB flat untuned.

PyTorch's CPU tensors come from ``malloc``. Under glibc, each of the many threads that run endpoints gets
its own *arena* (up to 8 per core), and freed chunks inside an arena's heap are rarely given back. Three
settings, through ``mallopt``/``malloc_trim`` from ctypes, so they hold however the app is started
(``convscope serve``, uvicorn, the tests, the Docker image):

- a bounded number of arenas (``M_ARENA_MAX``, set before the endpoint threads exist): freed memory is
  reused across threads instead of stranded in one thread's arena;
- optionally a fixed mmap threshold (``M_MMAP_THRESHOLD``, off by default): every allocation above it becomes
  its own mapping, unmapped when freed. Set low (1 MiB was the default once), it catches every conv output,
  so each forward pass maps, faults in (the kernel zeroes every page) and unmaps its activations again:
  bench/bench_allocator.py measured a ResNet-18 forward at 1.9× the CPU time and 35× the page faults of
  glibc's own dynamic threshold, for about 5 % less RSS in the soak. glibc's dynamic threshold keeps such
  tensors in the heaps, and the trims below return their free pages;
- ``malloc_trim(0)`` now and then (a daemon thread): returns the free pages inside the heaps.

On other C libraries (musl, macOS) these do nothing. jemalloc (Debian's ``libjemalloc2`` via LD_PRELOAD)
needs the environment set before the process starts; it showed the same growth as glibc while the cycle
was there (the growth was live objects, not the allocator), so it is not needed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading

log = logging.getLogger("convscope")

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return None


class Allocator:
    """Tunes glibc's malloc once (:meth:`tune`) and trims it every ``trim_interval_s`` until :meth:`close`."""

    def __init__(self, arena_max: int, mmap_threshold_bytes: int, trim_interval_s: float) -> None:
        self.arena_max = arena_max
        self.mmap_threshold_bytes = mmap_threshold_bytes
        self.trim_interval_s = trim_interval_s
        self.libc = _glibc()
        self.trims = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def tuned(self) -> bool:
        return self.libc is not None

    def tune(self) -> None:
        if self.libc is None:
            return
        if self.arena_max > 0:
            self.libc.mallopt(M_ARENA_MAX, self.arena_max)
        if self.mmap_threshold_bytes > 0:
            self.libc.mallopt(M_MMAP_THRESHOLD, self.mmap_threshold_bytes)
            self.libc.mallopt(M_TRIM_THRESHOLD, 2 * self.mmap_threshold_bytes)
        if self.trim_interval_s > 0:
            self._thread = threading.Thread(target=self._trim_now_and_then, name="convscope-malloc-trim", daemon=True)
            self._thread.start()

    def trim(self) -> None:
        if self.libc is not None:
            self.libc.malloc_trim(0)
            self.trims += 1

    def _trim_now_and_then(self) -> None:
        while not self._stop.wait(self.trim_interval_s):
            self.trim()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
