"""Cancellation of work nobody waits for any more, and who asked for it.

Each HTTP request gets a :class:`CancelToken` (set by :class:`server.middleware.disconnect.DisconnectWatch`
when its client disconnects) and a client id; both travel in context variables, which Starlette copies
into the thread that runs a sync endpoint, so services read them without every router passing them on.

Long computations call :func:`checkpoint` between batches or steps: it raises :class:`WorkCancelled`
once the work's token is cancelled. Work shared by several callers (the single-flight cache) runs under a
token that is cancelled only when *every* caller's token is.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from server.errors import ApiError
from server.services.work.clients import LOCAL, ClientId


class WorkCancelled(ApiError):
    """The client went away (or the server is stopping): the work was abandoned half-way.

    Work of a request that :func:`cancel_all` stopped (the server is stopping) is answered 503
    ``shutting_down`` with Retry-After, not 499: the client is still there, and a proxy in front of several
    replicas (deploy/nginx) asks another one, so a rolling restart fails no request."""

    def __init__(self, why: str = "the client disconnected") -> None:
        if current_token().stopping:  # the request's own token (Starlette copies it into the endpoint's thread)
            super().__init__(503, "shutting_down", "This server is restarting; ask again in a moment.",
                             {"Retry-After": "1"})
        else:
            super().__init__(499, "cancelled", f"The computation was cancelled: {why}.")


class CancelToken:
    """Set once; never unset."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.stopping = False  # cancelled because the server stops (not because the client left)

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self, stopping: bool = False) -> None:
        self.stopping = self.stopping or stopping
        self._event.set()

    def check(self) -> None:
        if self.cancelled:
            raise WorkCancelled()


class NeverCancelled(CancelToken):
    """The token of work not started by a request (tests, benchmarks, the CLI)."""

    @property
    def cancelled(self) -> bool:
        return False

    def cancel(self, stopping: bool = False) -> None:  # pragma: no cover - nobody owns it
        pass


_NEVER = NeverCancelled()
_live: set[CancelToken] = set()  # the tokens of requests in flight, cancelled together on shutdown
_live_lock = threading.Lock()
_token: ContextVar[CancelToken] = ContextVar("convscope_cancel", default=_NEVER)
_client: ContextVar[ClientId] = ContextVar("convscope_client", default=LOCAL)


def current_token() -> CancelToken:
    return _token.get()


def current_client() -> ClientId:
    return _client.get()


@contextmanager
def bound(token: CancelToken, client: ClientId | None = None) -> Iterator[None]:
    """Run the block with ``token`` (and ``client``) as the current ones."""
    reset_token = _token.set(token)
    reset_client = _client.set(client) if client is not None else None
    try:
        yield
    finally:
        _token.reset(reset_token)
        if reset_client is not None:
            _client.reset(reset_client)


def checkpoint() -> None:
    """Raise :class:`WorkCancelled` when the current work is cancelled (its client left, or shutdown)."""
    _token.get().check()


@contextmanager
def live(token: CancelToken) -> Iterator[None]:
    """Count ``token`` among the requests in flight for the block (see :func:`cancel_all`)."""
    with _live_lock:
        _live.add(token)
    try:
        yield
    finally:
        with _live_lock:
            _live.discard(token)


def cancel_all() -> int:
    """Shutdown: every request in flight is cancelled, so its computation stops at its next checkpoint
    (and nobody waits in a queue any more). Returns how many were cancelled."""
    with _live_lock:
        tokens = list(_live)
    for token in tokens:
        token.cancel(stopping=True)
    return len(tokens)
