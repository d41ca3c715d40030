"""Headers a dependency asks for on any kind of answer (``X-ConvScope-Weights``): filed in the ASGI scope
by :func:`add_response_header`, added by :class:`ScopeHeadersMiddleware`."""

from __future__ import annotations

SCOPE_HEADERS = "convscope.headers"


def add_response_header(scope: dict, name: str, value: str) -> None:
    """Ask :class:`ScopeHeadersMiddleware` to put ``name: value`` on this request's answer, whatever kind of
    response the endpoint returns (FastAPI merges a dependency's headers only into JSON answers)."""
    scope.setdefault(SCOPE_HEADERS, {})[name] = value


class ScopeHeadersMiddleware:
    """Adds the headers dependencies filed with :func:`add_response_header` (unless the answer has them)."""

    def __init__(self, app) -> None:  # noqa: ANN001 - an ASGI app
        self.app = app

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:  # noqa: ANN001
            extra = scope.get(SCOPE_HEADERS)
            if message["type"] == "http.response.start" and extra:
                headers = list(message.get("headers") or [])
                present = {name.lower() for name, _ in headers}
                for name, value in extra.items():
                    if name.lower().encode("latin-1") not in present:
                        headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
