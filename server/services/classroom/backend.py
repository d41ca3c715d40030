"""Where sessions live: the :class:`SessionBackend` interface, its records, and the in-process change hub.

Two implementations share the interface: :class:`~server.services.classroom.memory.InProcessBackend` (one
server process) and :class:`~server.services.classroom.redis_backend.RedisBackend` (any number of replicas
sharing a Redis; state changes travel by pub/sub). Rules (caps, tokens, what a state may hold) live in the
service above them; a backend only stores, counts atomically and delivers change notices.
"""

from __future__ import annotations

import asyncio
import enum
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class SessionRecord:
    code: str
    token_digest: str
    join_url: str
    state: dict[str, str]
    version: int  # bumped by every state change; the SSE event id
    created: float
    creator: str = ""  # the address that started it (a cap on live sessions per address)


@dataclass(frozen=True)
class Submission:
    id: str
    image_id: str
    name: str
    submitted_at: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class Admission(enum.Enum):
    OK = "ok"
    GONE = "gone"  # no such session (closed, expired, never existed)
    FULL = "full"  # the session's cap is reached
    STUDENT_FULL = "student_full"  # this student's cap is reached
    CREATOR_FULL = "creator_full"  # this address already runs its share of sessions


class SessionBackend(ABC):
    """Storage and delivery for sessions. Every method is safe to call from the app's event loop."""

    hub: ChangeHub

    async def start(self) -> None:
        """Connect (called once in the app's lifespan, before the first request)."""
        return None

    async def aclose(self) -> None:
        """Release connections and background tasks."""
        return None

    @abstractmethod
    async def create(self, record: SessionRecord, max_sessions: int, idle_s: float,
                     per_creator: int = 0) -> Admission | None:
        """Store a new session unless ``max_sessions`` live ones exist (FULL) or its creator already runs
        ``per_creator`` (CREATOR_FULL; 0: no such cap); None when the code is taken."""

    @abstractmethod
    async def get(self, code: str) -> SessionRecord | None: ...

    @abstractmethod
    async def touch(self, code: str, idle_s: float) -> bool:
        """Push the idle expiry back; False when the session is gone."""

    @abstractmethod
    async def set_state(self, code: str, state: dict[str, str]) -> int | None:
        """Replace the state, bump the version and notify every replica's followers; None when gone."""

    @abstractmethod
    async def close(self, code: str) -> bool:
        """Delete the session and everything in it, and tell its followers; False when already gone."""

    @abstractmethod
    async def expire_idle(self) -> list[str]:
        """Drop sessions whose idle time ran out (telling their followers); the codes dropped."""

    @abstractmethod
    async def join(self, code: str, follower_id: str, cap: int, ttl_s: float) -> Admission:
        """Count a follower in (for ``ttl_s`` unless refreshed), unless ``cap`` are already following."""

    @abstractmethod
    async def refresh(self, code: str, follower_id: str, ttl_s: float) -> bool:
        """Keep a follower counted; False when the session is gone."""

    @abstractmethod
    async def leave(self, code: str, follower_id: str) -> None: ...

    @abstractmethod
    async def counts(self, code: str) -> tuple[int, int]:
        """(followers, submissions) of a session (0, 0 when gone)."""

    @abstractmethod
    async def add_submission(self, code: str, submission: Submission, student: str,
                             per_session: int, per_student: int) -> Admission: ...

    @abstractmethod
    async def submissions(self, code: str) -> list[Submission]: ...

    @abstractmethod
    async def clear_submissions(self, code: str) -> None:
        """Empty the wall (and every student's count with it)."""

    @abstractmethod
    async def session_count(self) -> int: ...

    @abstractmethod
    async def referenced_images(self) -> dict[str, set[str]]:
        """Every live session's code → the image ids it refers to (its wall, the image in its state)."""


def state_image(state: dict[str, str]) -> set[str]:
    """The uploaded image a view state shows (the ``image`` query key, when it is an upload's id)."""
    image = state.get("image", "")
    return {image} if len(image) == 64 and all(c in "0123456789abcdef" for c in image) else set()


def state_event(version: int, state: dict[str, str]) -> dict[str, Any]:
    return {"type": "state", "version": version, "state": state}


CLOSED_EVENT: dict[str, Any] = {"type": "closed"}


class _Channel:
    __slots__ = ("event", "latest", "watchers")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.latest: dict[str, Any] | None = None
        self.watchers = 0


class ChangeHub:
    """Wakes this process's followers of a session when its state changes.

    A state is a whole snapshot, so a follower needs only the latest one: a slow follower skips states
    instead of buffering them, and memory stays one payload per watched session whatever the rate.
    """

    def __init__(self) -> None:
        self._channels: dict[str, _Channel] = {}
        self.closing = False

    def subscribe(self, code: str) -> Subscription:
        return Subscription(self, code)

    def publish(self, code: str, payload: dict[str, Any] | None) -> None:
        """Wake the session's local followers; ``None`` means "re-read the state" (after a lost link)."""
        channel = self._channels.get(code)
        if channel is None:
            return  # nobody here follows it
        channel.latest = payload
        fired, channel.event = channel.event, asyncio.Event()
        fired.set()

    def resync_all(self) -> None:
        for code in list(self._channels):
            self.publish(code, None)

    def shut_down(self) -> None:
        """End every stream now (server shutdown): followers reconnect, to this server or another."""
        self.closing = True
        for code in list(self._channels):
            self.publish(code, {"type": "shutdown"})

    def watching(self) -> int:
        return sum(channel.watchers for channel in self._channels.values())

    def _attach(self, code: str) -> _Channel:
        channel = self._channels.get(code)
        if channel is None:
            channel = self._channels[code] = _Channel()
        channel.watchers += 1
        return channel

    def _detach(self, code: str) -> None:
        channel = self._channels.get(code)
        if channel is not None:
            channel.watchers -= 1
            if channel.watchers <= 0:
                del self._channels[code]


class Subscription:
    """One follower's view of a session's changes; :meth:`close` it (streams do, in ``finally``)."""

    def __init__(self, hub: ChangeHub, code: str) -> None:
        self._hub = hub
        self._code = code
        self._channel = hub._attach(code)
        self._event = self._channel.event
        self._closed = False

    async def next(self, timeout: float) -> tuple[bool, dict[str, Any] | None]:
        """(True, latest payload) once something changed, (False, None) after ``timeout`` seconds."""
        if self._hub.closing:
            return True, {"type": "shutdown"}
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except asyncio.TimeoutError:
            return False, None
        # Take the new event before reading the payload, so a change right after is not missed.
        self._event = self._channel.event
        return True, self._channel.latest

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._hub._detach(self._code)
