"""Python's cyclic garbage collector, kept from stalling the event loop.

A full collection walks every tracked object while it holds the GIL. After start-up the server tracks about
half a million (torch's, torchvision's and FastAPI's modules, functions and classes, the default model): one
full collection took 283-329 ms on the 2-core machine (load 5), and the class mix of issue 21 saw a 644 ms
/api/health from a separate process while the collector ran now and then under the allocations of 150
requests. What exists when start-up ends lives as long as the process, so it is moved into the collector's
permanent generation (``gc.freeze``): a full collection then walks only what requests made (measured:
0.0 ms right after). No collection first: it would cost every start (and every test's app) 0.3 s, for the
little garbage start-up leaves, which is handed back to the collector when the app stops.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def startup_frozen() -> Iterator[int]:
    """While the app runs, the objects that exist now are out of the collector's walks; yields their
    number. On leaving they are handed back (an app made and closed by a test leaves nothing frozen)."""
    gc.freeze()
    try:
        yield gc.get_freeze_count()
    finally:
        gc.unfreeze()
