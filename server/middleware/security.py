"""Plain ASGI middlewares (not ``BaseHTTPMiddleware``, so streaming bodies and client disconnects pass
through untouched); every refusal is in the API's JSON error shape:

- :class:`SecurityHeadersMiddleware`: on every answer, no MIME sniffing, a strict Content-Security-Policy
  (no inline script), no referrers, not framable.
- :class:`RequestBodyLimitMiddleware`: request bodies are bounded (413) before they are read whole, and a
  body that stalls (no byte for ``idle_timeout`` s) or trickles (longer than ``total_timeout`` s) is cut off
  with 408, freeing whatever slot its request holds.
- :class:`TrustedHostMiddleware`: DNS-rebinding guard. Only ``Host`` names this machine really has are
  answered: loopback names, its addresses and host names, the public URL's host, and the configured
  allow-list (:class:`server.middleware.host_names.HostAllowList`).
- :class:`OriginCheckMiddleware`: a state-changing request (POST…) whose ``Origin`` is another site is
  refused (403) unless CORS allows that origin; browsers always send ``Origin`` on cross-site POSTs.
- :class:`UrlLengthMiddleware`: over-long URLs get 414. :class:`HeadMiddleware`: ``HEAD`` works wherever
  ``GET`` does (the same headers, no body).
- :class:`JsonCORSMiddleware`: Starlette's CORS, whose preflight refusals are JSON errors too.

CORS stays closed unless ``Settings.cors_origins`` names origins (wired in ``server.main``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

import anyio
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import error_response
from server.middleware.host_names import HostAllowList, host_name

# The page is plain ES modules and stylesheets from /static: no inline script, no eval, no plug-ins, not
# framable. Images and downloads the page makes itself (canvas exports, object URLs) are data:/blob: URLs.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "font-src 'self'",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
)

# FastAPI's interactive docs are built from inline script; they keep working without the page's policy.
DOCS_PATHS = ("/docs", "/redoc")


class SecurityHeadersMiddleware:
    """Adds :data:`SECURITY_HEADERS` to every HTTP response and the CSP to all but the API docs pages."""

    def __init__(self, app: ASGIApp, exempt_from_csp: Iterable[str] = DOCS_PATHS) -> None:
        self.app = app
        self.exempt_from_csp = tuple(exempt_from_csp)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        with_csp = not path.startswith(self.exempt_from_csp)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                extra = list(SECURITY_HEADERS)
                if with_csp:
                    extra.append(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
                for name, value in extra:
                    key = name.lower().encode("latin-1")
                    if key not in present:  # an endpoint's own, stricter choice wins
                        headers.append((key, value.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RequestBodyLimitMiddleware:
    """Refuses request bodies over ``limit`` bytes (413 ``payload_too_large``): by Content-Length before
    anything is read, else by counting while the body streams. Paths in ``exempt`` (the image upload, which
    streams and enforces its own, larger limit) pass untouched."""

    def __init__(self, app: ASGIApp, limit: int, exempt: Iterable[str] = (), idle_timeout: float = math.inf,
                 total_timeout: float = math.inf) -> None:
        self.app = app
        self.limit = limit
        self.exempt = frozenset(exempt)
        self.idle_timeout = idle_timeout
        self.total_timeout = total_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limited = scope.get("path") not in self.exempt  # the upload enforces its own, larger limit
        has_body = False
        for name, value in scope.get("headers", []):
            if name == b"content-length" and (not value.isdigit() or (limited and int(value) > self.limit)):
                response = (error_response(413, "payload_too_large", self._message()) if value.isdigit() else
                            error_response(400, "bad_content_length", "The Content-Length header is not a number."))
                await response(scope, receive, send)
                return
            if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
                has_body = True
        if not has_body and scope["method"] in ("GET", "HEAD"):  # no length, no chunks: nothing to time or count
            await self.app(scope, receive, send)
            return
        received = 0
        complete = False
        deadline = time.monotonic() + self.total_timeout

        async def guarded_receive() -> Message:
            nonlocal received, complete
            if complete:  # after the body, receive() only waits for a disconnect: never time that out
                return await receive()
            wait = min(self.idle_timeout, deadline - time.monotonic())
            with anyio.move_on_after(max(wait, 0)) as scope_:
                message = await receive()
            if scope_.cancelled_caught:
                # FastAPI re-raises HTTPExceptions from the body stream; the app's handler shapes it. The
                # request's slot is freed as the exception unwinds, and uvicorn closes the connection.
                raise HTTPException(408, f"The request body stalled: no complete body within the "
                                         f"{'idle' if wait == self.idle_timeout else 'total'} time limit "
                                         f"({wait:.0f} s).")
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if limited and received > self.limit:
                    raise HTTPException(413, self._message())
            else:
                complete = True
            return message

        await self.app(scope, guarded_receive, send)

    def _message(self) -> str:
        return f"The request body is larger than the {self.limit:,}-byte limit."


# --- Host names, origins, URL length, HEAD, CORS refusals ----------------------------------------------------

class TrustedHostMiddleware:
    """Answers only requests whose ``Host`` names this server (``hosts``); others get 400 ``invalid_host``."""

    def __init__(self, app: ASGIApp, hosts: HostAllowList) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = host_name(Headers(scope=scope).get("host", ""))
        # No Host at all (HTTP/1.0, a raw ASGI call) is no browser's: rebinding needs a page's request.
        if not host or self.hosts.permits(host, scope.get("server")):
            await self.app(scope, receive, send)
            return
        response = error_response(400, "invalid_host", f"This server does not answer to the host name "
                                  f"{host[:100]!r}, which is not one of this machine's names or addresses. To "
                                  f"allow it, add it to CONVSCOPE_ALLOWED_HOSTS (e.g. "
                                  f"CONVSCOPE_ALLOWED_HOSTS='[\"{host[:100]}\"]') or set CONVSCOPE_PUBLIC_URL, "
                                  "and restart the server.")
        await response(scope, receive, send)


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class OriginCheckMiddleware:
    """Refuses (403 ``foreign_origin``) a state-changing request or a WebSocket handshake sent by a page of
    another origin, unless CORS allows that origin: a page elsewhere cannot upload into (or start downloads
    on) a server it found on the student's loopback or LAN, nor open its live socket (browsers apply no CORS
    to WebSockets). Requests without ``Origin`` (curl, scripts) are not browsers' and pass. A refused
    handshake gets the same JSON answer, as the handshake's HTTP response."""

    def __init__(self, app: ASGIApp, allowed_origins: Sequence[str] = ()) -> None:
        self.app = app
        self.allowed = frozenset(origin.rstrip("/").lower() for origin in allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if not (kind == "websocket" or (kind == "http" and scope["method"] not in SAFE_METHODS)):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None or self._same_or_allowed(origin, headers):
            await self.app(scope, receive, send)
            return
        what = "Live sockets" if kind == "websocket" else "Requests that change state"
        response = error_response(403, "foreign_origin", f"{what} are not accepted from pages of another origin "
                                  f"({origin[:100]!r}); set CONVSCOPE_CORS_ORIGINS to allow one.")
        await response(scope, receive, send)

    def _same_or_allowed(self, origin: str, headers: Headers) -> bool:
        origin = origin.strip().rstrip("/").lower()
        if "*" in self.allowed or origin in self.allowed:
            return True
        if origin == "null":
            return False
        try:  # raises on a port that is no number or out of range (":abc", ":99999"), or a broken "[::1"
            parts = urlsplit(origin)
            port = parts.port
        except ValueError:
            return False  # a malformed origin is no page of ours
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False
        # Same host (and port, where the origin names one) as the request was sent to. The scheme is not
        # compared: behind a TLS-terminating proxy the page is https while the server sees http.
        default = {"http": 80, "https": 443}[parts.scheme]
        theirs = parts.hostname if port in (None, default) else f"{parts.hostname}:{port}"
        host = headers.get("host", "").strip().lower()
        return theirs == host or theirs == host.removesuffix(f":{default}")


class UrlLengthMiddleware:
    """414 ``uri_too_long`` for a path plus query string over ``limit`` bytes (uvicorn's own, larger limits
    answer in plain text before the app sees the request)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = len(scope.get("raw_path") or scope.get("path", "").encode()) + len(scope.get("query_string", b""))
            if length > self.limit:
                response = error_response(414, "uri_too_long", f"The URL is {length:,} bytes long; the limit is "
                                          f"{self.limit:,}.")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class HeadMiddleware:
    """``HEAD`` wherever ``GET`` exists: the request runs as a GET and only its head is sent (the
    Content-Length stays the GET's, as HTTP asks)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        finished = asyncio.Event()  # the head is out: a streaming GET (an event stream) must stop here

        async def send_head(message: Message) -> None:
            if message["type"] == "http.response.body":
                if finished.is_set():
                    return
                finished.set()
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        async def receive_until_head() -> Message:
            if finished.is_set():
                return {"type": "http.disconnect"}
            incoming = asyncio.ensure_future(receive())
            stop = asyncio.ensure_future(finished.wait())
            done, _ = await asyncio.wait({incoming, stop}, return_when=asyncio.FIRST_COMPLETED)
            if incoming in done:
                stop.cancel()
                return incoming.result()
            incoming.cancel()
            return {"type": "http.disconnect"}

        await self.app({**scope, "method": "GET"}, receive_until_head, send_head)


class JsonCORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware, with its refused preflights answered as JSON errors (``cors_refused``)."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        reason = bytes(response.body).decode("utf-8", "replace")
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
        return error_response(response.status_code, "cors_refused",
                              f"{reason}: this server's CORS settings do not allow that request.", headers)


def install_request_guards(app, settings) -> None:  # noqa: ANN001 - FastAPI, server.settings.Settings
    """The guards above, outermost last (call after the other middlewares, before the security headers)."""
    app.add_middleware(OriginCheckMiddleware, allowed_origins=settings.cors_origins)
    app.add_middleware(HeadMiddleware)
    app.add_middleware(UrlLengthMiddleware, limit=settings.max_url_bytes)
    app.add_middleware(TrustedHostMiddleware, hosts=HostAllowList(settings.allowed_hosts, settings.public_url))


def install_edge_middlewares(app, settings) -> None:  # noqa: ANN001 - a Starlette app, server.settings.Settings
    """The outermost middlewares, the same on every app the server runs (the full app, and the page served
    while it loads, :mod:`server.startup`): the request guards, the security headers, and who the client is
    (``server.middleware.forwarded``). Call after the app's other middlewares."""
    from server.middleware.forwarded import ForwardedClientMiddleware

    install_request_guards(app, settings)  # origin, HEAD, URL length, Host (issue 10)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(ForwardedClientMiddleware, trusted=settings.forwarded_allow_ips)
