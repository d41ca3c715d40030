"""Bounded admission for model work: a few requests compute, a bounded number wait, the rest are told
to come back (503 + Retry-After) at once instead of timing out in a queue nobody can see.

One :class:`WorkLimiter` is one pool (the scheduler has a cheap one and a heavy one). Every wait is
counted and bounded: by the queue's length (503 at once when full), by a timeout (503), by the client's
share (429: one client may hold at most ``per_client`` places, running or waiting, and the ids behind one
address or one class session together a bounded number: :mod:`server.services.work.shares`), and by
the client itself (a cancelled request leaves the queue at once). A freed slot goes to the waiting request
whose client group holds the fewest places per share, then whose group computed least lately, oldest first,
so one client's burst does not push others back. A full queue does not shut out a client that holds little:
its request takes the place of the newest waiting request of the group holding the most places per share
(that one hears 503), so the queue stays bounded and a teacher asking one thing at a time is served while
ten clients hold eight places each. Inside a group whose share is full (the tabs of one address, the
students of one class session), a member holding little takes the place of the member holding most, so
ids made up inside the group cannot keep its other members out.
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
from server.services.work.timing import note

POLL_S = 0.05  # how often a waiting request looks at its cancellation token


class RecentUse:
    """Slot-seconds each client group used lately, halving every ``half_life_s``: among waiting requests
    whose groups hold as many places, the one whose group computed least lately goes first (a teacher's
    5 ms predictions before a page's 400 ms feature maps). Bounded: past ``max_groups`` the least used
    half is forgotten. Not thread-safe (the pool's lock guards it)."""

    def __init__(self, half_life_s: float = 10.0, max_groups: int = 4096) -> None:
        self.half_life_s = half_life_s
        self.max_groups = max_groups
        self._used: dict[str, tuple[float, float]] = {}  # group → (seconds, when last added)

    def of(self, group: str, now: float) -> float:
        seconds, when = self._used.get(group, (0.0, now))
        return seconds * 0.5 ** ((now - when) / self.half_life_s)

    def add(self, group: str, seconds: float, now: float) -> None:
        self._used[group] = (self.of(group, now) + seconds, now)
        if len(self._used) > self.max_groups:
            ranked = sorted(self._used, key=lambda g: self.of(g, now))
            for forgotten in ranked[: len(ranked) // 2]:
                del self._used[forgotten]

    def __len__(self) -> int:
        return len(self._used)


class WorkLimiter:
    def __init__(self, max_active: int, max_waiting: int, wait_timeout_s: float = 30.0, retry_after_s: int = 1,
                 per_client: int | None = None, name: str = "model work", express: int = 0) -> None:
        self.max_active = max(1, max_active)
        # slots only quick work may take (admit(quick=True)), beside the ``max_active`` everyone takes: a
        # computation of a few milliseconds then never waits for a slow one to end (they are not preempted)
        self.express = max(0, express)
        self._express_active = 0
        self._quick: set[int] = set()  # waiting tickets of quick work
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
        self.recent = RecentUse()  # slot-seconds per client group, lately
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
    def _load(self, client: ClientId) -> float:
        """Places ``client``'s group holds (running + waiting) per share it may hold: the measure of who
        has the most. Under the lock."""
        return self.shares.held_by_group(client.group) / max(1, client.group_scale)

    def _next(self, quick_only: bool = False) -> int | None:
        """The ticket that gets the next free slot: the one whose client group holds the fewest places per
        share, then whose group computed least lately (:class:`RecentUse`), then the oldest (``quick_only``: among
        quick work, for an express slot). Not the group *running* the fewest: with two slots and forty clients almost
        every group runs nothing, and the order fell back to first come, first served — a teacher asking
        one prediction at a time waited 15 s behind the queued feature maps of ten clients holding eight
        places each (measured with Server-Timing in bench/bench_fairness.py --scenario class-mix)."""
        queue = [item for item in self._queue if item[0] in self._quick] if quick_only else self._queue
        if not queue:
            return None
        now = time.monotonic()
        return min(queue, key=lambda item: (self._load(item[1]), self.recent.of(item[1].group, now), item[0]))[0]

    def _lane(self, ticket: int | None, quick: bool) -> str | None:
        """Which slot ``ticket`` (None: a request not queued yet) may take now: "slot", "express" (quick work,
        when an express slot is free and it is the next quick one), or None. Under the lock."""
        if self._active < self.max_active and (not self._queue if ticket is None else self._next() == ticket):
            return "slot"
        if quick and self._express_active < self.express and (
                not self._quick if ticket is None else self._next(quick_only=True) == ticket):
            return "express"
        return None

    def _push_out(self, client: ClientId) -> bool:
        """Free a queue place for ``client`` (which has taken its place already): the newest waiting request
        of the group holding the most places per share goes, if that group holds more per share than
        ``client``'s. Under the lock."""
        if self.max_waiting == 0 or not self._queue:
            return False
        victim = max(reversed(self._queue), key=lambda item: self._load(item[1]))  # the newest of the largest
        if self._load(victim[1]) <= self._load(client):
            return False
        return self._drop(victim)

    def _push_out_within(self, client: ClientId) -> bool:
        """``client``'s group holds its whole share: free a place for ``client`` from the member of the same
        group holding the most, when that member holds more than ``client`` will (its newest waiting request
        goes). Ids made up inside an address or a class session then cannot hold the places of the group's
        other members. Under the lock."""
        mine = self.shares.held(client.member) + 1
        same = [item for item in reversed(self._queue) if item[1].group == client.group]
        if not same:
            return False
        victim = max(same, key=lambda item: self.shares.held(item[1].member))
        if self.shares.held(victim[1].member) <= mine:
            return False
        return self._drop(victim)

    def _drop(self, item: tuple[int, ClientId]) -> bool:
        self._queue.remove(item)
        self._pushed_out.add(item[0])
        self._cond.notify_all()
        return True

    @contextmanager
    def admit(self, client: ClientId | str | None = None, token: CancelToken | None = None,
              quick: bool = False) -> Iterator[None]:
        """Hold one of the ``max_active`` slots for the duration of the block (``quick`` work, measured to take a
        few milliseconds, may also take an express slot)."""
        client = current_client() if client is None else client
        if isinstance(client, str):
            client = ClientId.of(client)
        token = current_token() if token is None else token
        asked = time.monotonic()
        quick = quick and self.express > 0
        with self._cond:
            why = self.shares.refusal(client)
            if why is not None and not (self.shares.group_full(client) and self._push_out_within(client)):
                raise self._refuse(429, "too_many_requests", why)
            self.shares.take(client)  # a place, waiting or running
            try:
                lane = self._lane(None, quick)
                if lane is None:
                    if len(self._queue) >= self.max_waiting and not self._push_out(client):
                        raise self._refuse(503, "overloaded", "queue full")
                    ticket = next(self._tickets)
                    self._queue.append((ticket, client))
                    if quick:
                        self._quick.add(ticket)
                    deadline = time.monotonic() + self.wait_timeout_s
                    try:
                        while (lane := self._lane(ticket, quick)) is None:
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
                        self._quick.discard(ticket)
                        if ticket in self._pushed_out:
                            self._pushed_out.discard(ticket)
                        else:
                            self._queue.remove((ticket, client))
                        self._cond.notify_all()
            except BaseException:
                self.shares.release(client)
                raise
            express = lane == "express"
            if express:
                self._express_active += 1
            else:
                self._active += 1
            self._running[client.group] = self._running.get(client.group, 0) + 1
            run = next(self._tickets)
            started = self._started[run] = time.monotonic()
        note("queue", started - asked)
        try:
            yield
        finally:
            held = time.monotonic() - started
            note("work", held)
            with self._cond:
                self._started.pop(run, None)
                if express:
                    self._express_active -= 1
                else:
                    self._active -= 1
                left = self._running.get(client.group, 0) - 1
                if left > 0:
                    self._running[client.group] = left
                else:
                    self._running.pop(client.group, None)
                self.shares.release(client)
                self.recent.add(client.group, held, time.monotonic())
                self.completed += 1
                self.mean_hold_s = held if self.completed == 1 else 0.8 * self.mean_hold_s + 0.2 * held
                self._cond.notify_all()

    @property
    def active(self) -> int:
        return self._active + self._express_active

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def held_by(self, client: ClientId | str) -> int:
        """Places (running + waiting) the client holds."""
        with self._cond:
            return self.shares.held(client.member if isinstance(client, ClientId) else client)
