"""End event streams as soon as the server is asked to stop.

uvicorn, on SIGTERM/SIGINT, stops accepting connections and then waits for every open response to finish
before it runs the lifespan's shutdown — and an event stream never finishes by itself. So we chain onto
the stop signals: our callback ends the streams (clients reconnect on their own), then uvicorn's handler
runs as before. `convscope serve` also bounds the wait (``Settings.shutdown_grace_s``), for servers run
in ways where signals cannot be chained (not in the main thread).
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def on_stop_signal(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` on the running loop when a stop signal arrives; returns the undo function."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # a TestClient or an embedding server: signals are not ours to chain
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return lambda: None
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(callback)
        before = previous.get(signum)
        if callable(before):
            before(signum, frame)
        elif before == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    for sig in _SIGNALS:
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, handler)

    def undo() -> None:
        for sig, before in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, before)

    return undo
