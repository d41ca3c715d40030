"""The ``Server-Timing`` header on every HTTP answer: where the request's time went (see
:mod:`server.services.work.timing` for the phases)."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.services.work.timing import RequestPhases, recording


class ServerTimingMiddleware:
    """Gives each HTTP request its :class:`RequestPhases` and adds them, with ``app`` (the whole time until the
    answer starts), to the answer's headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        phases = RequestPhases()
        started = time.perf_counter()

        async def send_timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                phases.add("app", time.perf_counter() - started)
                message = {**message, "headers": [*(message.get("headers") or ()), (b"server-timing", phases.header())]}
            await send(message)

        with recording(phases):
            await self.app(scope, receive, send_timed)
