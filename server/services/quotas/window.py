"""A sliding window per key (a client's address): how many events, and how many units (bytes), in the last
``window_s`` seconds, and how long until a new event of a given size fits under the limits.

Memory is bounded: events older than the window are dropped as keys are used, and beyond ``max_keys`` keys
the one whose newest event is oldest is forgotten (an attacker with many addresses cannot grow the table).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class WindowLimit:
    """At most ``count`` events and ``amount`` units per key in any ``window_s`` seconds (0: no such cap)."""

    window_s: float
    count: int = 0
    amount: int = 0


class KeyedWindow:
    def __init__(self, limit: WindowLimit, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.max_keys = max(1, max_keys)
        self._clock = clock
        self._lock = threading.Lock()
        # key → entries (time, events, units), oldest first; keys ordered by their newest entry, oldest first
        self._events: OrderedDict[str, deque[tuple[float, int, int]]] = OrderedDict()

    def _live(self, key: str, now: float) -> deque[tuple[float, int, int]]:
        events = self._events.get(key)
        if events is None:
            return deque()
        horizon = now - self.limit.window_s
        while events and events[0][0] <= horizon:
            events.popleft()
        if not events:
            del self._events[key]
        return events

    def totals(self, key: str) -> tuple[int, int]:
        """(events, units) of ``key`` in the window now."""
        with self._lock:
            events = self._live(key, self._clock())
            return sum(n for _, n, _ in events), sum(units for _, _, units in events)

    def wait_for(self, key: str, amount: int = 0, count: int = 1) -> float:
        """Seconds until ``count`` more events of ``amount`` units fit under the limits (0: they fit now;
        ``inf``: they never will, being larger than the limit itself)."""
        limit = self.limit
        if (limit.amount and amount > limit.amount) or (limit.count and count > limit.count):
            return math.inf
        with self._lock:
            now = self._clock()
            events = self._live(key, now)
            n = sum(e for _, e, _ in events)
            total = sum(units for _, _, units in events)
            wait = 0.0
            for when, spent_n, spent in events:  # oldest first: what must age out before the new ones fit
                if (not limit.count or n + count <= limit.count) and (not limit.amount or total + amount <= limit.amount):
                    break
                n -= spent_n
                total -= spent
                wait = when + limit.window_s - now
            return max(wait, 0.0)

    def add(self, key: str, amount: int = 0, count: int = 1) -> None:
        """Record ``count`` events of ``amount`` units in all (``count=0``: units alone, added to the last)."""
        with self._lock:
            now = self._clock()
            events = self._live(key, now)
            if key not in self._events:
                self._events[key] = events
            events.append((now, count, amount))
            self._events.move_to_end(key)
            while len(self._events) > self.max_keys:
                self._events.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)
