"""End event streams as soon as the server is asked to stop.

uvicorn, on SIGTERM/SIGINT, stops accepting connections and then waits for every open response to finish
before it runs the lifespan's shutdown — and an event stream never finishes by itself. So we chain onto
the stop signals: our callback ends the streams (clients reconnect on their own), then uvicorn's handler
runs as before. `convscope serve` also bounds the wait (``Settings.shutdown_grace_s``), for servers run
in ways where signals cannot be chained (not in the main thread).
"""

from __future__ import annotations

from collections.abc import Callable

from server.services.work.stop_signals import chain_stop_signals


def on_stop_signal(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` on the running loop when a stop signal arrives; returns the undo function."""
    return chain_stop_signals(callback, on_loop=True)
