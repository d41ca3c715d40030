"""Live mode: camera frames over a WebSocket, one-slot mailboxes, a compact per-frame answer."""

from server.services.live.frame import LiveLimits
from server.services.live.hub import LiveHub

__all__ = ["LiveHub", "LiveLimits"]
