"""Python's cyclic garbage collector, kept from stalling the event loop.

A full collection walks every tracked object while it holds the GIL. After start-up the server tracks about
half a million (torch's, torchvision's and FastAPI's modules, functions and classes, the default model): one
full collection took 283-329 ms on the 2-core machine (load 5), and the class mix of issue 21 saw a 644 ms
/api/health from a separate process while the collector ran now and then under the allocations of 150
requests. What exists when start-up ends lives as long as the process, so it is moved into the collector's
permanent generation (``gc.freeze``): a full collection then walks only what requests made (measured:
0.0 ms right after). No collection first: it would cost every start (and every test's app) 0.3 s, for the
little garbage start-up leaves, which is handed back to the collector when the app stops.

Modules imported later, on first use (timm with the first network overview: about 47,000 objects), and the
models loaded then, grow the walk again: under the class mix, with 120,000 objects tracked, full collections
took 92-115 ms. So a full collection that took longer than ``slow_ms`` freezes what survived it (``gc.freeze`` in the collector's "stop" callback): what survived a full collection is almost all
long-lived, and what is not (an object of a request in flight at that moment that later becomes part of a
cycle) stays in memory, a bounded amount per freeze. After a freeze the walks are short again, so it happens
only after the process has grown its long-lived set, a few times in a process's life.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SLOW_MS = 20.0  # a full collection walking ~20,000 objects on the 2-core machine


class Refreezer:
    """The collector callback that freezes the survivors of a slow full collection."""

    def __init__(self, slow_ms: float = SLOW_MS) -> None:
        self.slow_ms = slow_ms
        self.freezes = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
            return
        if (time.perf_counter() - self._started) * 1000 > self.slow_ms:
            gc.freeze()
            self.freezes += 1


@contextmanager
def startup_frozen(slow_ms: float = SLOW_MS) -> Iterator[Refreezer]:
    """While the app runs, the objects that exist now are out of the collector's walks, and so are the
    survivors of a later full collection slower than ``slow_ms``. On leaving they are handed back (an app made
    and closed by a test leaves nothing frozen)."""
    gc.freeze()
    refreezer = Refreezer(slow_ms)
    gc.callbacks.append(refreezer)
    try:
        yield refreezer
    finally:
        gc.callbacks.remove(refreezer)
        gc.unfreeze()
