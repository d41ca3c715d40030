"""Binary responses: .npy arrays and PNG images, with content-derived ETags and cache headers; revalidations
whose If-None-Match names the ETag are answered 304 (NotModifiedMiddleware)."""

from __future__ import annotations

import hashlib
import io

import numpy as np
from fastapi import Response

# Every view URL carries its full state (model, weights variant, image sha256, layer…), so identical URLs
# give identical bytes; a short max-age plus an ETag keeps a classroom of laptops from re-asking.
CACHE_CONTROL = "public, max-age=3600"


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def _binary(body: bytes, media_type: str, headers: dict[str, str] | None) -> Response:
    all_headers = {
        "Cache-Control": CACHE_CONTROL,
        "ETag": '"' + hashlib.sha256(body).hexdigest()[:32] + '"',
        "X-Content-Type-Options": "nosniff",
    }
    all_headers.update(headers or {})
    return Response(content=body, media_type=media_type, headers=all_headers)


def npy_response(array: np.ndarray, headers: dict[str, str] | None = None) -> Response:
    """A float32 NumPy .npy file."""
    return _binary(npy_bytes(array), "application/octet-stream", headers)


def png_response(png: bytes, headers: dict[str, str] | None = None) -> Response:
    return _binary(png, "image/png", headers)


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


# What a 304 keeps of the 200 it stands for (RFC 9110 §15.4.5: the validators and caching fields; no body
# metadata such as Content-Type or Content-Length), plus which weights made it.
NOT_MODIFIED_KEEPS = frozenset({b"cache-control", b"etag", b"expires", b"vary", b"content-location", b"date",
                                b"x-convscope-weights"})


def _opaque_tag(tag: bytes) -> bytes:
    """An entity tag without its weak prefix: If-None-Match compares weakly (RFC 9110 §13.1.2)."""
    tag = tag.strip()
    return tag[2:] if tag.startswith(b"W/") else tag


class NotModifiedMiddleware:
    """A GET or HEAD whose ``If-None-Match`` names the ETag of the 200 it would get is answered 304 with no
    body: a browser revalidating a view after ``max-age`` (a classroom of laptops) gets a few hundred bytes
    instead of the picture again. Answers without an ETag, and every other status, pass untouched."""

    def __init__(self, app) -> None:  # noqa: ANN001 - an ASGI app
        self.app = app

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        wanted = [value for name, value in scope.get("headers") or () if name == b"if-none-match"]
        if not wanted:
            await self.app(scope, receive, send)
            return
        tags = {_opaque_tag(tag) for value in wanted for tag in value.split(b",")}
        not_modified = False

        async def send_conditional(message) -> None:  # noqa: ANN001
            nonlocal not_modified
            if message["type"] == "http.response.start" and message["status"] == 200:
                etag = next((value for name, value in message.get("headers") or () if name.lower() == b"etag"), None)
                if etag is not None and (b"*" in tags or _opaque_tag(etag) in tags):
                    not_modified = True
                    headers = [(n, v) for n, v in message.get("headers") or () if n.lower() in NOT_MODIFIED_KEEPS]
                    await send({"type": "http.response.start", "status": 304, "headers": headers})
                    return
            elif message["type"] == "http.response.body" and not_modified:
                if not message.get("more_body", False):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await send(message)

        await self.app(scope, receive, send_conditional)
