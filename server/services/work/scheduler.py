"""Scheduling by cost: cheap and heavy model work in separate bounded pools, so heavy work never takes the
capacity cheap work needs (the middleware that cancels the work of clients that disconnect is
:mod:`server.middleware.disconnect`).

Every computation is admitted under a *label* ("saliency/resnet50/scorecam/map", "capture/lenet5",
"forward/vgg16", …) and a prior cost class. The pool is chosen by the label's **measured** cost: the
scheduler keeps a running mean of the CPU time each label's thread spent in its slot (CPU time, not wall
time: waiting for a busy core is no cost of the work itself), and a label whose mean is at least
``heavy_threshold_s`` runs in the heavy pool, one below it in the cheap pool. Until a label has been
measured its prior decides (heavy: Score-CAM, occlusion, SmoothGrad, integrated gradients and gradient
top-k; cheap: everything else). How the default threshold was chosen is in the project notes (the
durations of every kind of work on every bundled and torchvision model, with the gap between them).

Requests that do no model work (health, presets, the page, static files) never enter a pool, and the
thread pool that runs sync endpoints is sized above everything the pools and caches can hold waiting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from server.services.work.cancel import cancel_all
from server.services.work.limiter import WorkLimiter
from server.services.work.stop_signals import chain_stop_signals

log = logging.getLogger("convscope")

T = TypeVar("T")
# The one admission type every service takes: (work label, prior cost class "cheap" | "heavy") → a context
# manager that holds a slot of the chosen pool for the block. ``Scheduler.admit`` is one.
Admit = Callable[[str, str], AbstractContextManager[Any]]


@dataclass
class Measured:
    mean_s: float = 0.0
    count: int = 0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.mean_s = seconds if self.count == 1 else 0.7 * self.mean_s + 0.3 * seconds


class Scheduler:
    """Two pools (``cheap``, ``heavy``) and the measured duration of every label."""

    def __init__(self, cheap: WorkLimiter, heavy: WorkLimiter, heavy_threshold_s: float,
                 quick_threshold_s: float = 0.0) -> None:
        self.cheap = cheap
        self.heavy = heavy
        self.heavy_threshold_s = heavy_threshold_s
        self.quick_threshold_s = quick_threshold_s  # cheap labels measured below it may take an express slot
        self._measured: dict[str, Measured] = {}
        self._lock = threading.Lock()

    def cost_class(self, label: str, prior: str = "cheap") -> str:
        with self._lock:
            measured = self._measured.get(label)
        if measured is None or measured.count == 0:
            return "heavy" if prior == "heavy" else "cheap"
        return "heavy" if measured.mean_s >= self.heavy_threshold_s else "cheap"

    def select(self, label: str, prior: str = "cheap") -> WorkLimiter:
        return self.heavy if self.cost_class(label, prior) == "heavy" else self.cheap

    @contextmanager
    def admit(self, label: str, prior: str = "cheap") -> Iterator[None]:
        """Hold a slot of the label's pool for the block, and measure how long the block takes."""
        pool = self.select(label, prior)
        with self._lock:
            measured = self._measured.get(label)
        quick = pool is self.cheap and measured is not None and measured.mean_s < self.quick_threshold_s
        with pool.admit(quick=quick):
            # the label's cost is the CPU time its thread spends, not the wall time: on a busy CPU a cheap
            # forward pass can take longer than the threshold while it waits for a core, and must not be
            # moved behind the heavy work for that (measured: LeNet-5's first prediction, 0.59 s wall, load 13)
            started = time.thread_time()
            try:
                yield
            finally:
                seconds = time.thread_time() - started
                with self._lock:
                    self._measured.setdefault(label, Measured()).add(seconds)

    def run(self, label: str, fn: Callable[[], T], prior: str = "cheap") -> T:
        """``fn()`` under :meth:`admit`."""
        with self.admit(label, prior):
            return fn()

    def measured(self) -> dict[str, tuple[float, int, str]]:
        """label → (mean seconds, runs, pool) — for the notes and the tests."""
        with self._lock:
            items = dict(self._measured)
        return {label: (m.mean_s, m.count, self.cost_class(label)) for label, m in items.items()}


@contextmanager
def cancel_on_signals() -> Iterator[None]:
    """While the app runs: SIGTERM / SIGINT first cancel every request in flight (their computations stop
    at the next checkpoint, queued ones leave their queue), then do what they did before (uvicorn's
    graceful shutdown, which waits for those requests — now seconds, not minutes)."""

    def cancel() -> None:
        log.info("stopping: cancelled %d requests in flight", cancel_all())

    undo = chain_stop_signals(cancel)
    try:
        yield
    finally:
        undo()
