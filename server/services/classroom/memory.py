"""Sessions in this process's memory: the default, for one server (one uvicorn worker)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from server.services.classroom.backend import (
    CLOSED_EVENT,
    Admission,
    ChangeHub,
    SessionBackend,
    SessionRecord,
    Submission,
    state_event,
    state_image,
)


@dataclass
class _Live:
    record: SessionRecord
    expires: float
    followers: dict[str, float] = field(default_factory=dict)  # follower id → time its count runs out
    submissions: list[Submission] = field(default_factory=list)
    per_student: dict[str, int] = field(default_factory=dict)


class InProcessBackend(SessionBackend):
    """Plain dicts: every method runs on the event loop without awaiting, so each is atomic."""

    def __init__(self, clock=time.time) -> None:  # type: ignore[no-untyped-def]
        self.hub = ChangeHub()
        self._clock = clock
        self._sessions: dict[str, _Live] = {}

    def _live(self, code: str) -> _Live | None:
        live = self._sessions.get(code)
        if live is not None and live.expires <= self._clock():
            self._drop(code)
            return None
        return live

    def _drop(self, code: str) -> None:
        if self._sessions.pop(code, None) is not None:
            self.hub.publish(code, CLOSED_EVENT)

    async def create(self, record: SessionRecord, max_sessions: int, idle_s: float,
                     per_creator: int = 0) -> Admission | None:
        await self.expire_idle()
        if record.code in self._sessions:
            return None
        if len(self._sessions) >= max_sessions:
            return Admission.FULL
        if per_creator > 0 and sum(live.record.creator == record.creator
                                   for live in self._sessions.values()) >= per_creator:
            return Admission.CREATOR_FULL
        self._sessions[record.code] = _Live(replace(record, state=dict(record.state)), self._clock() + idle_s)
        return Admission.OK

    async def get(self, code: str) -> SessionRecord | None:
        live = self._live(code)
        return replace(live.record, state=dict(live.record.state)) if live else None

    async def touch(self, code: str, idle_s: float) -> bool:
        live = self._live(code)
        if live is None:
            return False
        live.expires = self._clock() + idle_s
        return True

    async def set_state(self, code: str, state: dict[str, str]) -> int | None:
        live = self._live(code)
        if live is None:
            return None
        live.record.state = dict(state)
        live.record.version += 1
        self.hub.publish(code, state_event(live.record.version, dict(state)))
        return live.record.version

    async def close(self, code: str) -> bool:
        known = self._live(code) is not None
        self._drop(code)
        return known

    async def expire_idle(self) -> list[str]:
        now = self._clock()
        gone = [code for code, live in self._sessions.items() if live.expires <= now]
        for code in gone:
            self._drop(code)
        return gone

    def _prune(self, live: _Live) -> None:
        now = self._clock()
        for follower, until in list(live.followers.items()):
            if until <= now:
                del live.followers[follower]

    async def join(self, code: str, follower_id: str, cap: int, ttl_s: float) -> Admission:
        live = self._live(code)
        if live is None:
            return Admission.GONE
        self._prune(live)
        if len(live.followers) >= cap:
            return Admission.FULL
        live.followers[follower_id] = self._clock() + ttl_s
        return Admission.OK

    async def refresh(self, code: str, follower_id: str, ttl_s: float) -> bool:
        live = self._live(code)
        if live is None:
            return False
        live.followers[follower_id] = self._clock() + ttl_s
        return True

    async def leave(self, code: str, follower_id: str) -> None:
        live = self._sessions.get(code)
        if live is not None:
            live.followers.pop(follower_id, None)

    async def counts(self, code: str) -> tuple[int, int]:
        live = self._live(code)
        if live is None:
            return 0, 0
        self._prune(live)
        return len(live.followers), len(live.submissions)

    async def add_submission(self, code: str, submission: Submission, student: str,
                             per_session: int, per_student: int) -> Admission:
        live = self._live(code)
        if live is None:
            return Admission.GONE
        if len(live.submissions) >= per_session:
            return Admission.FULL
        if live.per_student.get(student, 0) >= per_student:
            return Admission.STUDENT_FULL
        live.submissions.append(submission)
        live.per_student[student] = live.per_student.get(student, 0) + 1
        return Admission.OK

    async def submissions(self, code: str) -> list[Submission]:
        live = self._live(code)
        return list(live.submissions) if live else []

    async def clear_submissions(self, code: str) -> None:
        live = self._live(code)
        if live is not None:
            live.submissions.clear()
            live.per_student.clear()

    async def session_count(self) -> int:
        await self.expire_idle()
        return len(self._sessions)

    async def referenced_images(self) -> dict[str, set[str]]:
        await self.expire_idle()
        return {code: state_image(live.record.state) | {item.image_id for item in live.submissions}
                for code, live in self._sessions.items()}
