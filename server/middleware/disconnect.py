"""The middleware that cancels the work of clients that disconnect (GETs, and POSTs with a small JSON body such
as the occlusion probe's), and names the client of each request."""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.services.work.cancel import CancelToken, bound, current_token, live
from server.services.work.clients import ClientIdentities

JSON_BODY_LIMIT = 256 * 1024  # a POST with a JSON body up to this size is read first, then watched like a GET


def _watched(scope: Scope) -> bool:
    """GET and HEAD; POST with a JSON body of a stated length up to JSON_BODY_LIMIT (an upload streams on)."""
    method = scope.get("method")
    if method in ("GET", "HEAD"):
        return True
    if method != "POST":
        return False
    headers = dict(scope.get("headers") or ())
    length = headers.get(b"content-length", b"").decode("latin-1")
    json_body = headers.get(b"content-type", b"").split(b";")[0].strip().lower() == b"application/json"
    return json_body and length.isdigit() and int(length) <= JSON_BODY_LIMIT


class DisconnectWatch:
    """ASGI middleware: each request gets its client (:mod:`server.services.work.clients`), and each watched
    request (GET, HEAD, small JSON POST) a cancellation token, set when its client disconnects; both are
    current while the endpoint runs (see :mod:`server.services.work.cancel`).

    A GET has no body, so after its one ``http.request`` message the only thing the server can still
    receive is ``http.disconnect``: a small task waits for it. A small JSON POST (the occlusion probe: a
    newer position makes the page give up the older request) is read whole first, then watched the same
    way. Other requests get the client id only (a POST may start that client's long job)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        identities = getattr(getattr(scope.get("app"), "state", None), "clients", None)
        client = await (identities or ClientIdentities()).identify(scope)
        if not _watched(scope):
            with bound(current_token(), client):
                await self.app(scope, receive, send)
            return
        token = CancelToken()
        gone = asyncio.Event()  # the client disconnected: streaming answers (event streams) must hear it too
        request: list[Message] = []  # the request's messages (a GET's one, a POST body's), then handed on
        while True:
            message = await receive()
            request.append(message)
            if message.get("type") == "http.disconnect":
                token.cancel()
                gone.set()
                break
            if not message.get("more_body"):
                break

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
            if request:
                return request.pop(0)
            await gone.wait()  # nothing but a disconnect can come after the request
            return {"type": "http.disconnect"}

        watcher = asyncio.ensure_future(watch())
        try:
            with live(token), bound(token, client):
                await self.app(scope, app_receive, send)
        finally:
            watcher.cancel()

