"""The one signal helper: run a callback when the server is asked to stop (SIGTERM / SIGINT), then let the
handler that was there before (uvicorn's graceful shutdown) run as it would have.

Used twice by the wiring: cancel the work in flight (:func:`server.services.work.scheduler.cancel_on_signals`)
and end the classroom's event streams (:func:`server.services.classroom.shutdown.on_stop_signal`)."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def chain_stop_signals(callback: Callable[[], None], *, on_loop: bool = False) -> Callable[[], None]:
    """Call ``callback`` when a stop signal arrives (``on_loop``: on the running event loop, thread-safely),
    then the previous handler; returns the undo function. Outside the main thread (a TestClient, an
    embedding server) signals are not ours to chain: nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = None
    if on_loop:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return lambda: None
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}

    def handler(signum: int, frame: FrameType | None) -> None:
        if loop is not None:
            loop.call_soon_threadsafe(callback)
        else:
            callback()
        before = previous.get(signum)
        if callable(before):
            before(signum, frame)
        elif before == signal.SIG_DFL:
            if signum == signal.SIGINT:
                signal.default_int_handler(signum, frame)
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)

    def undo() -> None:
        for sig, before in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, before)

    return undo
