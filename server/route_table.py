"""FastAPI's routing state, built before the first request instead of during the first minute of a class.

FastAPI (0.165, the version installed here) keeps each included router as a node and builds its routes' matching state (each
endpoint's dependency tree, its parameter fields) the first time a request scans that router. A request
scans every router before the one that matches it, so the first requests of a fresh server pay for most of
the table: 0.38 s on this 2-core machine for ConvScope's ~100 operations, held on the event loop while a class
is arriving (bench_fairness --scenario class-mix caught it as a 150 ms stall of /api/health at the start of
the mix). The lifespan builds it once at start-up, before the start-up objects are frozen out of the garbage
collector's walks (server/services/memory/collector.py), so the table is frozen with them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI


def build_route_table(app: FastAPI) -> int:
    """Build the lazily made matching state of every included router now; the number of routes it holds.
    A FastAPI without that laziness (no ``effective_candidates``) has nothing to build: 0.

    Only the candidates, which hold every operation: building the *low-priority* lists from here as well (FastAPI
    builds them from the root router, with that router's include context) broke the Train page's overlay of two
    runs (tests/browser/test_train_page.py), so those few stay lazy."""
    return _build(app.router.routes)


def _build(routes: Iterable[Any]) -> int:
    count = 0
    for route in routes:
        candidates = getattr(route, "effective_candidates", None)
        if candidates is None:
            continue
        built = candidates()
        count += len(built) + _build(built)
    return count
