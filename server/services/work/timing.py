"""Where a request's time went, as the standard ``Server-Timing`` response header.

The :class:`~server.middleware.server_timing.ServerTimingMiddleware` gives each HTTP request a
:class:`RequestPhases` in a context variable (Starlette copies it into the thread of a sync endpoint, and the
object is shared, not copied, so what the thread records is what the middleware reads); the places where a
request can wait or work record their phase with :func:`phase`:

- ``queue``: waiting for a slot of a work pool (cheap or heavy, :mod:`server.services.work.limiter`);
- ``work``: holding that slot (the computation itself);
- ``batch``: waiting in the prediction batcher for a batch another request leads;
- ``app``: from the request reaching the app to its answer's first byte (everything, the event loop's and the
  endpoint thread's lateness included).

A browser's network panel shows them; ``bench/bench_fairness.py`` reads them to say where slow answers waited.
Only durations are sent, never what another client asked for.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class RequestPhases:
    """Seconds per phase name, summed over the request (a request may wait twice: a batch, then a slot)."""

    __slots__ = ("seconds",)

    MAX_PHASES = 8  # the names are the code's own; bounded all the same

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        if name in self.seconds or len(self.seconds) < self.MAX_PHASES:
            self.seconds[name] = self.seconds.get(name, 0.0) + max(0.0, seconds)

    def header(self) -> bytes:
        """``queue;dur=12.3, work;dur=40.1`` (milliseconds, as Server-Timing says)."""
        return ", ".join(f"{name};dur={1000 * s:.1f}" for name, s in self.seconds.items()).encode("latin-1")


_phases: ContextVar[RequestPhases | None] = ContextVar("convscope_phases", default=None)


def current_phases() -> RequestPhases | None:
    return _phases.get()


@contextmanager
def recording(phases: RequestPhases) -> Iterator[RequestPhases]:
    reset = _phases.set(phases)
    try:
        yield phases
    finally:
        _phases.reset(reset)


def note(name: str, seconds: float) -> None:
    """Add ``seconds`` to the current request's phase ``name`` (nothing outside a request)."""
    phases = _phases.get()
    if phases is not None:
        phases.add(name, seconds)


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Time the block as the current request's phase ``name``."""
    started = time.perf_counter()
    try:
        yield
    finally:
        note(name, time.perf_counter() - started)
