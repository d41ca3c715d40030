"""Scheduling by cost: cheap and heavy model work in separate bounded pools, so heavy work never takes the
capacity cheap work needs; and the middleware that cancels the work of clients that disconnect.

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

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import TypeVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.services.cancel import CancelToken, bound, cancel_all, current_token, live
from server.services.fairness.identity import ClientIdentities
from server.services.work_limiter import WorkLimiter

log = logging.getLogger("convscope")

T = TypeVar("T")


@dataclass
class Measured:
    mean_s: float = 0.0
    count: int = 0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.mean_s = seconds if self.count == 1 else 0.7 * self.mean_s + 0.3 * seconds


class Scheduler:
    """Two pools (``cheap``, ``heavy``) and the measured duration of every label."""

    def __init__(self, cheap: WorkLimiter, heavy: WorkLimiter, heavy_threshold_s: float) -> None:
        self.cheap = cheap
        self.heavy = heavy
        self.heavy_threshold_s = heavy_threshold_s
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
        with pool.admit():
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


class DisconnectWatch:
    """ASGI middleware: each request gets its client (:mod:`server.services.fairness.identity`), and each GET
    a cancellation token, set when its client disconnects; both are current while the endpoint runs (see
    :mod:`server.services.cancel`).

    A GET has no body, so after its one ``http.request`` message the only thing the server can still
    receive is ``http.disconnect``: a small task waits for it. Other methods pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        identities = getattr(getattr(scope.get("app"), "state", None), "clients", None)
        client = await (identities or ClientIdentities()).identify(scope)
        if scope.get("method") not in ("GET", "HEAD"):
            with bound(current_token(), client):
                await self.app(scope, receive, send)
            return
        token = CancelToken()
        first = await receive()
        if first.get("type") == "http.disconnect":
            token.cancel()
        delivered = False
        gone = asyncio.Event()  # the client disconnected: streaming answers (event streams) must hear it too
        if token.cancelled:
            gone.set()

        async def watch() -> None:
            try:
                while True:
                    message = await receive()
                    if message.get("type") == "http.disconnect":
                        break
            except Exception:  # the server is closing the connection
                pass
            token.cancel()
            gone.set()

        async def app_receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return first
            await gone.wait()  # nothing but a disconnect can come for a GET
            return {"type": "http.disconnect"}

        watcher = asyncio.ensure_future(watch())
        try:
            with live(token), bound(token, client):
                await self.app(scope, app_receive, send)
        finally:
            watcher.cancel()


@contextmanager
def cancel_on_signals() -> Iterator[None]:
    """While the app runs: SIGTERM / SIGINT first cancel every request in flight (their computations stop
    at the next checkpoint, queued ones leave their queue), then do what they did before (uvicorn's
    graceful shutdown, which waits for those requests — now seconds, not minutes)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals are for the main thread only (tests run the app elsewhere)
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(sig: int, frame: FrameType | None) -> None:
        log.info("stopping: cancelled %d requests in flight", cancel_all())
        before = previous[sig]
        if callable(before):
            before(sig, frame)
        elif before == signal.SIG_DFL:
            signal.default_int_handler(sig, frame) if sig == signal.SIGINT else os._exit(128 + sig)

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, before in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, before)
