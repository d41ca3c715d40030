"""Binary responses: .npy arrays and PNG images, with content-derived ETags and cache headers (revalidations
are answered 304 by :mod:`server.middleware.not_modified`)."""

from __future__ import annotations

import hashlib
import io

import anyio
import numpy as np
from fastapi import Response
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

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


class EventStreamResponse(StreamingResponse):
    """text/event-stream that always closes its generator (follower counts, subscriptions), however it ends."""

    media_type = "text/event-stream"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()  # type: ignore[attr-defined]
