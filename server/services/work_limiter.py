"""Bounded admission for model work: a few requests compute, a bounded number wait, the rest are told
to come back (503 + Retry-After) at once instead of timing out in a queue nobody can see."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from server.errors import ApiError


class WorkLimiter:
    def __init__(self, max_active: int, max_waiting: int, wait_timeout_s: float = 30.0, retry_after_s: int = 1) -> None:
        self.max_active = max(1, max_active)
        self.max_waiting = max(0, max_waiting)
        self.wait_timeout_s = wait_timeout_s
        self.retry_after_s = retry_after_s
        self._cond = threading.Condition()
        self._active = 0
        self._waiting = 0
        self.rejected = 0

    def _overloaded(self, why: str) -> ApiError:
        self.rejected += 1
        return ApiError(503, "overloaded", f"The server is busy ({why}); try again in a moment.",
                        {"Retry-After": str(self.retry_after_s)})

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one of the ``max_active`` slots for the duration of the block."""
        with self._cond:
            if self._active >= self.max_active:
                if self._waiting >= self.max_waiting:
                    raise self._overloaded("queue full")
                self._waiting += 1
                deadline = time.monotonic() + self.wait_timeout_s
                try:
                    while self._active >= self.max_active:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise self._overloaded("waited too long")
                        self._cond.wait(left)
                finally:
                    self._waiting -= 1
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify()

    @property
    def active(self) -> int:
        return self._active

    @property
    def waiting(self) -> int:
        return self._waiting
