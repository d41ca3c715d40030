"""Bounded admission for model work: a few requests compute, a bounded number wait, the rest are told
to come back (503 + Retry-After) at once instead of timing out in a queue nobody can see.

One :class:`WorkLimiter` is one pool (the scheduler has a cheap one and a heavy one). Every wait is
counted and bounded: by the queue's length (503 at once when full), by a timeout (503), by the client's
share (429: one client may hold at most ``per_client`` places, running or waiting, and the ids behind one
address or one class session together a bounded number: :mod:`server.services.work.shares`), and by
the client itself (a cancelled request leaves the queue at once). A freed slot goes to the waiting request
whose client group runs the fewest computations, oldest first, so one client's burst does not push others back.
A full queue does not shut out a client that holds little: its request takes the place of the newest waiting
request of the group holding the most places (that one hears 503), so the queue stays bounded and a teacher
asking one thing at a time is served while ten clients hold eight places each.
Retry-After is the measured queue: the mean time a slot is held × places ahead ÷ slots.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from server.errors import ApiError
from server.services.work.cancel import CancelToken, WorkCancelled, current_client, current_token
from server.services.work.clients import ClientId
from server.services.work.shares import Shares

POLL_S = 0.05  # how often a waiting request looks at its cancellation token


class WorkLimiter:
    def __init__(self, max_active: int, max_waiting: int, wait_timeout_s: float = 30.0, retry_after_s: int = 1,
                 per_client: int | None = None, name: str = "model work") -> None:
        self.max_active = max(1, max_active)
        self.max_waiting = max(0, max_waiting)
        self.wait_timeout_s = wait_timeout_s
        self.retry_after_s = retry_after_s
        self.per_client = per_client
        self.name = name
        self._cond = threading.Condition()
        self._active = 0
        self._queue: list[tuple[int, ClientId]] = []  # (ticket, client), oldest first
        self._pushed_out: set[int] = set()  # tickets whose place a client holding fewer places took
        self._tickets = itertools.count()
        self.shares = Shares(per_client)  # places (running + waiting) per client and per client group
        self._running: dict[str, int] = {}  # client group → computations running
        self.rejected = 0
        self.mean_hold_s = 0.0  # exponentially weighted mean time a slot is held (measured)
        self.completed = 0
        self._started: dict[int, float] = {}  # running computation → when it started

    # --- measured queue ------------------------------------------------------------------------------
    def expected_wait_s(self, ahead: int | None = None) -> float:
        """Seconds until a request joining now would start: places ahead × mean hold ÷ slots."""
        ahead = len(self._queue) + self._active if ahead is None else ahead
        # before the first run ends, the longest-running one is the best measure there is
        running = max((time.monotonic() - t for t in list(self._started.values())), default=0.0)
        hold = max(self.mean_hold_s, running)
        return hold * max(0, ahead + 1 - self.max_active) / self.max_active

    def retry_after(self) -> str:
        return str(max(self.retry_after_s, math.ceil(self.expected_wait_s())))

    def _refuse(self, status: int, code: str, why: str) -> ApiError:
        self.rejected += 1
        message = (f"The server is busy ({self.name}: {why}); try again in a moment." if status == 503 else
                   f"You already have {why} in the {self.name} queue; wait for them before asking for more.")
        return ApiError(status, code, message, {"Retry-After": self.retry_after()})

    # --- admission -----------------------------------------------------------------------------------
    def _next(self) -> int | None:
        """The ticket that gets the next free slot: its client's group runs the fewest, then the oldest."""
        if not self._queue:
            return None
        return min(self._queue, key=lambda item: (self._running.get(item[1].group, 0), item[0]))[0]

    def _push_out(self, client: ClientId) -> bool:
        """Free a queue place for ``client`` (which has taken its share already): the newest waiting request
        of the group holding the most places goes, if that group holds more than ``client``'s. Under the lock."""
        if self.max_waiting == 0:
            return False
        held = self.shares.held_by_group
        victim = max(reversed(self._queue), key=lambda item: held(item[1].group))  # the newest of the largest
        if held(victim[1].group) <= held(client.group):
            return False
        self._queue.remove(victim)
        self._pushed_out.add(victim[0])
        self._cond.notify_all()
        return True

    @contextmanager
    def admit(self, client: ClientId | str | None = None, token: CancelToken | None = None) -> Iterator[None]:
        """Hold one of the ``max_active`` slots for the duration of the block."""
        client = current_client() if client is None else client
        if isinstance(client, str):
            client = ClientId.of(client)
        token = current_token() if token is None else token
        with self._cond:
            why = self.shares.refusal(client)
            if why is not None:
                raise self._refuse(429, "too_many_requests", why)
            self.shares.take(client)  # a place, waiting or running
            try:
                if self._active >= self.max_active or self._queue:
                    if len(self._queue) >= self.max_waiting and not self._push_out(client):
                        raise self._refuse(503, "overloaded", "queue full")
                    ticket = next(self._tickets)
                    self._queue.append((ticket, client))
                    deadline = time.monotonic() + self.wait_timeout_s
                    try:
                        while self._active >= self.max_active or self._next() != ticket:
                            left = deadline - time.monotonic()
                            if ticket in self._pushed_out:
                                raise self._refuse(503, "overloaded", "queue full; a client with fewer "
                                                                      "requests waiting took the place")
                            if left <= 0:
                                raise self._refuse(503, "overloaded", "waited too long")
                            if token.cancelled:
                                raise WorkCancelled()
                            self._cond.wait(min(left, POLL_S))
                    finally:
                        if ticket in self._pushed_out:
                            self._pushed_out.discard(ticket)
                        else:
                            self._queue.remove((ticket, client))
                        self._cond.notify_all()
            except BaseException:
                self.shares.release(client)
                raise
            self._active += 1
            self._running[client.group] = self._running.get(client.group, 0) + 1
            run = next(self._tickets)
            started = self._started[run] = time.monotonic()
        try:
            yield
        finally:
            held = time.monotonic() - started
            with self._cond:
                self._started.pop(run, None)
                self._active -= 1
                left = self._running.get(client.group, 0) - 1
                if left > 0:
                    self._running[client.group] = left
                else:
                    self._running.pop(client.group, None)
                self.shares.release(client)
                self.completed += 1
                self.mean_hold_s = held if self.completed == 1 else 0.8 * self.mean_hold_s + 0.2 * held
                self._cond.notify_all()

    @property
    def active(self) -> int:
        return self._active

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def held_by(self, client: ClientId | str) -> int:
        """Places (running + waiting) the client holds."""
        with self._cond:
            return self.shares.held(client.member if isinstance(client, ClientId) else client)
