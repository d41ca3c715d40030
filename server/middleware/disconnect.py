"""The middleware that cancels the work of GET clients that disconnect, and names the client of each request."""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.services.work.cancel import CancelToken, bound, current_token, live

CLIENT_HEADER = b"x-convscope-client"


class DisconnectWatch:
    """ASGI middleware: each GET gets a cancellation token, set when its client disconnects, and a client
    id (the ``X-ConvScope-Client`` header the page sends, else the peer address); both are current while
    the endpoint runs (see :mod:`server.services.work.cancel`).

    A GET has no body, so after its one ``http.request`` message the only thing the server can still
    receive is ``http.disconnect``: a small task waits for it. Other methods get the client id only."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope.get("method") not in ("GET", "HEAD"):  # named too (a POST may start a client's long job)
            with bound(current_token(), _client_id(scope)):
                await self.app(scope, receive, send)
            return
        token = CancelToken()
        client = _client_id(scope)
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


def _client_id(scope: Scope) -> str:
    for name, value in scope.get("headers") or ():
        if name == CLIENT_HEADER:
            text = value.decode("latin-1").strip()[:64]
            if text and text.isprintable():
                peer = scope.get("client") or ("?", 0)
                return f"{peer[0]}/{text}"
    peer = scope.get("client")
    return str(peer[0]) if peer else "local"
