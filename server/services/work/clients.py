"""The one place a request's client is decided: its address (:func:`client_address`, the ``ClientAddressDep``
of per-address quotas, sessions and code lookups) and, for the shares of the heavy pool and the job queue,
its :class:`ClientId` (:class:`ClientIdentities`, named by the ``DisconnectWatch`` middleware).

A client is its network address: the peer uvicorn reports, or what a proxy named in
``CONVSCOPE_FORWARDED_ALLOW_IPS`` says (``server.middleware.forwarded``; nobody else's forwarded headers are
believed). What a request *says* about itself cannot make it a new client:

- ``X-ConvScope-Client`` (the page's random id) is a hint *inside* its address: tabs behind one address are
  kept apart from each other, but together they hold no more than the address's share.
- ``X-ConvScope-Session`` + ``X-ConvScope-Student`` of a **live** classroom session give a student its own
  share, so thirty students behind one school NAT address do not share one student's share. Together the
  students of one session hold at most ``session_scale`` shares: a forger who mints student ids gains at
  most the session's bound, and sessions per address are capped apart.

A :class:`ClientId` names a *group* (whose places together are bounded by ``group_scale`` × the pool's
per-client share) and a *member* inside it (bounded by one share).
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.types import Scope

CLIENT_HEADER = b"x-convscope-client"
SESSION_HEADER = b"x-convscope-session"
STUDENT_HEADER = b"x-convscope-student"
_HINT = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
STUDENT = re.compile(r"^[A-Za-z0-9_-]{8,64}$")  # the page's random student id (also the submissions' rule)


async def client_address(connection: HTTPConnection) -> str:
    """The client's address: the peer's, or what a proxy named in ``CONVSCOPE_FORWARDED_ALLOW_IPS`` says
    (``server.middleware.forwarded``); per-address quotas count by it, and uploaded models are scoped to it."""
    return connection.client.host if connection.client else "unknown"


@dataclass(frozen=True)
class ClientId:
    """A client as the pools' shares count it: a *member* (one share) inside a *group* (``group_scale``
    shares together)."""

    group: str  # an address, or "session:CODE"
    member: str  # the group itself, or a hint / student inside it
    group_scale: int = 1  # the group may hold this many per-client shares together

    @classmethod
    def of(cls, name: str) -> ClientId:
        """A plain client named ``name`` (tests, the CLI, work started by the server itself)."""
        return cls(name, name)

    def __str__(self) -> str:
        return self.member


LOCAL = ClientId.of("local")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return value.decode("latin-1").strip()
    return None


class ClientIdentities:
    """Decides every request's :class:`ClientId`; ``is_live(code)`` says whether a session code is live
    (answers are remembered ``ttl_s`` seconds, so a busy class costs one lookup per session per few seconds)."""

    def __init__(self, is_live: Callable[[str], Awaitable[bool]] | None = None, session_scale: int = 8,
                 ttl_s: float = 5.0, max_codes: int = 1024) -> None:
        self.is_live = is_live
        self.session_scale = max(1, session_scale)
        self.ttl_s = ttl_s
        self.max_codes = max_codes
        self._live: dict[str, tuple[bool, float]] = {}  # code → (live, when checked)

    async def identify(self, scope: Scope) -> ClientId:
        address = await client_address(HTTPConnection(scope))
        from server.services.classroom.codes import normalize_code  # here: the classroom package imports the pools

        student, typed = _header(scope, STUDENT_HEADER), _header(scope, SESSION_HEADER)
        code = normalize_code(typed[:32]) if typed else None
        if student and code and STUDENT.match(student) and await self._session_live(code):
            group = f"session:{code}"
            # the address is part of the member: someone who learns another student's id cannot spend
            # that student's share from elsewhere (students behind one NAT address still differ by id)
            return ClientId(group, f"{group}/{address}/{student}", self.session_scale)
        hint = _header(scope, CLIENT_HEADER)
        if hint and _HINT.match(hint):
            return ClientId(address, f"{address}/{hint}")
        return ClientId.of(address)

    async def _session_live(self, code: str) -> bool:
        if self.is_live is None:
            return False
        now = time.monotonic()
        known = self._live.get(code)
        if known is not None and now - known[1] < self.ttl_s:
            return known[0]
        live = await self.is_live(code)
        if len(self._live) >= self.max_codes:
            self._live = {c: v for c, v in self._live.items() if now - v[1] < self.ttl_s}
            if len(self._live) >= self.max_codes:
                self._live.clear()
        self._live[code] = (live, now)
        return live
