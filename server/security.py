"""Two plain ASGI middlewares (not ``BaseHTTPMiddleware``, so streaming bodies and client disconnects pass
through untouched):

- :class:`SecurityHeadersMiddleware`: on every answer, no MIME sniffing, a strict Content-Security-Policy
  (no inline script), no referrers, not framable.
- :class:`RequestBodyLimitMiddleware`: request bodies are bounded (413) before they are read whole.

CORS stays closed unless ``Settings.cors_origins`` names origins (wired in ``server.main``).
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import error_response

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

    def __init__(self, app: ASGIApp, limit: int, exempt: Iterable[str] = ()) -> None:
        self.app = app
        self.limit = limit
        self.exempt = frozenset(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                response = (error_response(413, "payload_too_large", self._message()) if value.isdigit() else
                            error_response(400, "bad_content_length", "The Content-Length header is not a number."))
                await response(scope, receive, send)
                return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # FastAPI re-raises HTTPExceptions from the body stream; the app's handler shapes it.
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, counting_receive, send)

    def _message(self) -> str:
        return f"The request body is larger than the {self.limit:,}-byte limit."
