"""Revalidations whose If-None-Match names the ETag of the 200 they would get are answered 304."""

from __future__ import annotations

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
