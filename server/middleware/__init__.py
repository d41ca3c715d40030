"""The ASGI middlewares, one module per concern: request guards and security headers (``security``), shared
answers for identical GETs (``coalesce``), cancellation on disconnect (``disconnect``), 304 revalidation
(``not_modified``), headers filed by dependencies (``scope_headers``), and whose address the client's is
(``forwarded``), where each request's time went (``server_timing``); the names the server answers to are ``host_names``."""

from server.middleware.coalesce import CoalesceIdenticalGets, SharedAnswers
from server.middleware.disconnect import DisconnectWatch
from server.middleware.forwarded import ForwardedClientMiddleware
from server.middleware.not_modified import NotModifiedMiddleware
from server.middleware.scope_headers import ScopeHeadersMiddleware, add_response_header
from server.middleware.security import (
    JsonCORSMiddleware,
    RequestBodyLimitMiddleware,
    SecurityHeadersMiddleware,
    install_edge_middlewares,
    install_request_guards,
)
from server.middleware.server_timing import ServerTimingMiddleware

__all__ = [
    "CoalesceIdenticalGets",
    "DisconnectWatch",
    "ForwardedClientMiddleware",
    "JsonCORSMiddleware",
    "NotModifiedMiddleware",
    "RequestBodyLimitMiddleware",
    "ScopeHeadersMiddleware",
    "SecurityHeadersMiddleware",
    "ServerTimingMiddleware",
    "SharedAnswers",
    "add_response_header",
    "install_edge_middlewares",
    "install_request_guards",
]
