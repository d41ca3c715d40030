"""The one cache of per-image and per-model results: an LRU within a byte budget, single-flight.

``get_or_compute(key, fn)`` returns the cached value or computes it once, however many callers ask at the
same moment: the first caller (the leader) runs ``fn`` in its own thread, the others wait for its result
(counted and bounded, and each leaves as soon as its own request is cancelled). The computation runs
under a token that is cancelled only when *every* caller's token is, so a client that disconnects stops
the work unless another client still waits for the same result. Values larger than the whole budget are
returned but not kept.

Every instance is made in the app's lifespan, with a budget from :class:`server.settings.Settings`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import torch

from server.errors import ApiError
from server.services.work.cancel import CancelToken, WorkCancelled, bound, current_client, current_token

V = TypeVar("V")

POLL_S = 0.05  # how often a waiting caller looks at its own cancellation token


def nbytes_of(value: Any) -> int:
    """Approximate bytes held by a cached value (arrays, tensors, pictures, bytes, and containers of them)."""
    if value is None:
        return 0
    size = getattr(value, "nbytes", None)
    if isinstance(size, int):
        return size
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, torch.Tensor):
        return int(value.numel() * value.element_size())
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value)
    if hasattr(value, "getbands") and hasattr(value, "size"):  # a PIL image
        width, height = value.size
        return int(width * height * len(value.getbands()))
    if isinstance(value, Mapping):
        return 64 + sum(nbytes_of(k) + nbytes_of(v) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return 56 + sum(nbytes_of(v) for v in value)
    if isinstance(value, str):
        return 49 + len(value)
    return 64


class _FlightToken(CancelToken):
    """Cancelled when every caller of the flight has gone."""

    def __init__(self, flight: _Flight) -> None:
        super().__init__()
        self._flight = flight

    @property
    def cancelled(self) -> bool:
        with self._flight.lock:
            callers = list(self._flight.callers)
        return not callers or all(t.cancelled for t in callers)


class _Flight:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.callers: list[CancelToken] = []
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.token = _FlightToken(self)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    computations: int = 0  # times ``fn`` ran
    shared: int = 0  # callers that waited for another caller's computation
    cancelled: int = 0
    evictions: int = 0


class ResultCache(Generic[V]):
    """LRU of computed values within ``budget_bytes``, with single-flight computation per key."""

    def __init__(self, name: str, budget_bytes: int, max_waiters: int = 512,
                 sizeof: Callable[[Any], int] = nbytes_of, max_items: int | None = None) -> None:
        self.name = name
        self.budget_bytes = max(0, int(budget_bytes))
        self.max_items = max_items
        self.max_waiters = max(1, max_waiters)
        self.sizeof = sizeof
        self.stats = CacheStats()
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._flights: dict[Hashable, _Flight] = {}
        self._waiters = 0
        self._lock = threading.Lock()

    # --- plain LRU ---------------------------------------------------------------------------------
    def get(self, key: Hashable) -> V | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            self._items.move_to_end(key)
            self.stats.hits += 1
            return hit[0]

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def put(self, key: Hashable, value: V) -> None:
        size = self.sizeof(value)
        if size > self.budget_bytes:
            return
        if isinstance(value, np.ndarray):
            value.setflags(write=False)  # shared by every request that reads it
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (value, size)
            self._bytes += size
            while self._items and (self._bytes > self.budget_bytes
                                   or (self.max_items is not None and len(self._items) > self.max_items)):
                _, (_, evicted) = self._items.popitem(last=False)
                self._bytes -= evicted
                self.stats.evictions += 1

    def discard(self, key: Hashable) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]

    def discard_where(self, predicate: Callable[[Hashable], bool]) -> None:
        with self._lock:
            for key in [k for k in self._items if predicate(k)]:
                self._bytes -= self._items.pop(key)[1]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def computing(self, key: Hashable) -> bool:
        """Whether a computation of ``key`` is under way now (its callers wait for it)."""
        with self._lock:
            return key in self._flights

    def values(self) -> list[V]:
        """A snapshot of the kept values, least recently used first."""
        with self._lock:
            return [value for value, _ in self._items.values()]

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    @property
    def waiting(self) -> int:
        """Callers waiting for another caller's computation right now."""
        return self._waiters

    # --- single flight -----------------------------------------------------------------------------
    def get_or_compute(self, key: Hashable, fn: Callable[[], V], keep: bool = True) -> V:
        """The value for ``key``; on a miss ``fn()`` runs once for all concurrent callers.

        ``fn`` runs with the flight's token current (see :mod:`server.services.work.cancel`), so its
        checkpoints stop it once every caller has gone. ``keep=False``: share the computation but do not
        keep the result (the caller files it itself, e.g. under several keys).
        """
        token = current_token()
        while True:
            token.check()
            with self._lock:
                hit = self._items.get(key)
                if hit is not None:
                    self._items.move_to_end(key)
                    self.stats.hits += 1
                    return hit[0]
                flight = self._flights.get(key)
                leader = flight is None
                if leader:
                    flight = _Flight()
                    self._flights[key] = flight
                    self.stats.misses += 1
                elif self._waiters >= self.max_waiters:
                    raise ApiError(503, "overloaded", f"The server is busy ({self.name}: too many waiting); "
                                   "try again in a moment.", {"Retry-After": "1"})
                else:
                    self._waiters += 1
                    self.stats.shared += 1
            assert flight is not None
            with flight.lock:
                flight.callers.append(token)
            if leader:
                return self._lead(key, flight, fn, keep)
            try:
                self._follow(flight, token)
            finally:
                with self._lock:
                    self._waiters -= 1
                with flight.lock:
                    flight.callers.remove(token)
            if isinstance(flight.error, WorkCancelled) and not token.cancelled:
                continue  # the others gave up just before we came: compute it ourselves
            if flight.error is not None:
                raise _copy(flight.error)
            return flight.value

    def _lead(self, key: Hashable, flight: _Flight, fn: Callable[[], V], keep: bool) -> V:
        try:
            with bound(flight.token, current_client()):
                value = fn()
            flight.value = value
            if keep:
                self.put(key, value)
            with self._lock:
                self.stats.computations += 1
            return value
        except BaseException as exc:
            flight.error = exc
            if isinstance(exc, WorkCancelled):
                with self._lock:
                    self.stats.cancelled += 1
            raise
        finally:
            with self._lock:
                if self._flights.get(key) is flight:
                    del self._flights[key]
            flight.done.set()

    @staticmethod
    def _follow(flight: _Flight, token: CancelToken) -> None:
        while not flight.done.wait(POLL_S):
            token.check()  # our client left: stop waiting (the flight runs on while others wait)


def _copy(error: BaseException) -> BaseException:
    """Each waiting request raises its own exception object (tracebacks are per raise)."""
    if isinstance(error, WorkCancelled):
        return WorkCancelled()
    if isinstance(error, ApiError):
        return ApiError(error.status, error.code, error.message, dict(error.headers))
    return error
