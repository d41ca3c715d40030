"""Whose address is the client's: X-Forwarded-For is believed only from proxies the operator names.

Per-address limits (sessions started, uploads, failed code lookups, the heavy pool's shares) count by the
client's address, so a header that anyone can write must not decide it. uvicorn believes
``X-Forwarded-For`` from 127.0.0.1 and ::1 by default: anyone on the machine (or a page's request through a
local proxy) could then be any number of clients. So:

- ``convscope serve`` starts uvicorn with ``proxy_headers=False``;
- with bare ``uvicorn server.main:create_app``, :class:`ForwardedClientMiddleware` undoes uvicorn's default
  rewrite: a request that came in on a loopback address with an ``X-Forwarded-For`` whose client is the one
  uvicorn derived from that header had its peer replaced, and gets the loopback peer back;
- only when ``CONVSCOPE_FORWARDED_ALLOW_IPS`` names proxies (IPs, networks, ``*``) is the header applied,
  by uvicorn's own ``ProxyHeadersMiddleware``, for requests from those proxies.

uvicorn's own ``--forwarded-allow-ips`` (or ``FORWARDED_ALLOW_IPS``) naming a non-loopback proxy still acts
before the app sees the request; use the ConvScope setting instead.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware, _TrustedHosts

from server.hosts import is_loopback

UVICORN_DEFAULT_TRUST = "127.0.0.1,::1"  # uvicorn's --forwarded-allow-ips default


class ForwardedClientMiddleware:
    """Add it outermost. ``trusted``: ``CONVSCOPE_FORWARDED_ALLOW_IPS`` (empty: believe no proxy)."""

    def __init__(self, app: ASGIApp, trusted: str = "") -> None:
        self.app = app
        self.inner: ASGIApp = ProxyHeadersMiddleware(app, trusted_hosts=trusted) if trusted.strip() else app  # type: ignore[arg-type]
        self._uvicorn_trust = _TrustedHosts(UVICORN_DEFAULT_TRUST)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            self._undo_uvicorn_rewrite(scope)
        await self.inner(scope, receive, send)  # type: ignore[arg-type]

    def _undo_uvicorn_rewrite(self, scope: Scope) -> None:
        server, client = scope.get("server"), scope.get("client")
        if not server or not client or not is_loopback(str(server[0])):
            return  # uvicorn's default trust covers loopback peers only, which arrive on loopback addresses
        forwarded = Headers(scope=scope).getlist("x-forwarded-for")
        if not forwarded:
            return
        derived = self._uvicorn_trust.get_trusted_client_address(", ".join(forwarded))
        if tuple(client) == tuple(derived):
            peer = "::1" if ":" in str(server[0]) else "127.0.0.1"
            scope["client"] = (peer, 0)
