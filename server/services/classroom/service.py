"""Classroom sessions: a teacher's view state broadcast to followers, and a wall of the class's images.

The rules live here (who may change what, every cap, idle expiry, what a state or a name may be); the
storage and the delivery of changes across replicas are the backend's (:mod:`.backend`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from starlette.concurrency import run_in_threadpool

from server.errors import ApiError
from server.services.classroom.backend import Admission, SessionBackend, SessionRecord, Submission, state_event
from server.services.classroom.codes import new_code, new_token, normalize_code, token_digest, token_matches
from server.services.classroom.pins import SessionPins
from server.services.classroom.predictions import WallPredictions
from server.services.classroom.state_rules import clean_name, validate_state
from server.services.images.store import IMAGE_ID
from server.services.quotas import KeyedWindow, WindowLimit

if TYPE_CHECKING:
    from server.settings import Settings

log = logging.getLogger("convscope")

_WEIGHTS = ("auto", "trained", "untrained")


@dataclass(frozen=True)
class SessionLimits:
    idle_s: float = 2 * 3600
    max_sessions: int = 50
    max_sessions_per_address: int = 5
    max_followers: int = 200
    max_submissions: int = 300
    max_submissions_per_student: int = 5
    max_state_bytes: int = 4096
    max_name_chars: int = 40
    heartbeat_s: float = 15.0
    max_stream_s: float = 600.0
    retry_ms: int = 2000
    max_failed_lookups: int = 20  # lookups of codes that name no session, per address and window; then 429
    failed_lookup_window_s: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionLimits:
        return cls(
            idle_s=settings.session_idle_s, max_sessions=settings.max_sessions,
            max_sessions_per_address=settings.max_sessions_per_address,
            max_followers=settings.max_followers_per_session,
            max_submissions=settings.max_submissions_per_session,
            max_submissions_per_student=settings.max_submissions_per_student,
            max_state_bytes=settings.max_session_state_bytes, max_name_chars=settings.max_submission_name_chars,
            heartbeat_s=settings.sse_heartbeat_s, max_stream_s=settings.sse_max_stream_s,
            max_failed_lookups=settings.max_failed_code_lookups,
            failed_lookup_window_s=settings.failed_code_lookup_window_s,
        )


def sse_message(event: str | None, data: dict[str, Any], event_id: int | None = None) -> bytes:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event:
        lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False))
    return ("\n".join(lines) + "\n\n").encode()


HEARTBEAT = b": keep-alive\n\n"


def _too_many(code: str, message: str, retry_after: int) -> ApiError:
    return ApiError(429, code, message, {"Retry-After": str(retry_after)})


class Classroom:
    def __init__(self, backend: SessionBackend, limits: SessionLimits, predictions: WallPredictions,
                 default_model: str, pins: SessionPins | None = None) -> None:
        self.backend = backend
        self.limits = limits
        self.predictions = predictions
        self.default_model = default_model
        self.pins = pins  # the images sessions refer to stay in the image store while they live
        # Codes are 6 of 31 characters (~887 million): guessing needs many misses, and misses are limited.
        self.failed_lookups = KeyedWindow(WindowLimit(limits.failed_lookup_window_s, limits.max_failed_lookups))
        self._sweeper: asyncio.Task[None] | None = None
        self._streams = 0

    # lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.backend.start()
        self._sweeper = asyncio.create_task(self._sweep(), name="convscope-session-expiry")
        if self.pins is not None:
            self.pins.start()

    def shut_down_streams(self) -> None:
        """End every open event stream now, so a stopping server is not held open by followers."""
        self.backend.hub.shut_down()

    async def aclose(self) -> None:
        self.shut_down_streams()
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
        if self.pins is not None:
            await self.pins.aclose()
        await self.backend.aclose()
        if self.predictions is not None:
            self.predictions.close()

    async def _sweep(self) -> None:
        interval = max(1.0, min(60.0, self.limits.idle_s / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.backend.expire_idle()
            except Exception as exc:  # noqa: BLE001 - the next sweep tries again
                log.warning("session expiry sweep failed: %s", exc)

    @property
    def open_streams(self) -> int:
        return self._streams

    # helpers ---------------------------------------------------------------------------------------------
    async def _record(self, code: str, client: str | None = None) -> SessionRecord:
        """The live session of ``code``, or 404. A ``client`` (address) that keeps naming codes of no session
        is guessing: after ``max_failed_lookups`` misses in the window it gets 429 until they age out."""
        if client is not None and self.limits.max_failed_lookups > 0:
            wait = self.failed_lookups.wait_for(client)
            if wait > 0:
                raise _too_many("too_many_failed_lookups",
                                f"This address asked for {self.limits.max_failed_lookups} session codes that do "
                                f"not exist within {self.limits.failed_lookup_window_s:g} s; check the code and "
                                "try again later.", math.ceil(wait))
        canonical = normalize_code(code)
        record = await self.backend.get(canonical) if canonical else None
        if record is None:
            if client is not None:
                self.failed_lookups.add(client)
            raise ApiError(404, "unknown_session", "There is no class session with this code (it may have ended).")
        return record

    async def _authorized(self, code: str, authorization: str | None, client: str | None = None) -> SessionRecord:
        record = await self._record(code, client)
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "missing_token", "This needs the teacher's token: Authorization: Bearer <token>.",
                           {"WWW-Authenticate": 'Bearer realm="convscope-session"'})
        if not token_matches(token.strip(), record.token_digest):
            raise ApiError(403, "wrong_token", "This token does not belong to this session's teacher.")
        await self.backend.touch(record.code, self.limits.idle_s)
        return record

    # sessions --------------------------------------------------------------------------------------------
    async def create(self, join_base: str, state: dict[str, str] | None = None, creator: str = "") -> dict[str, Any]:
        clean = validate_state(state or {}, self.limits.max_state_bytes)
        token = new_token()
        for _ in range(16):
            code = new_code()
            record = SessionRecord(code=code, token_digest=token_digest(token), join_url=f"{join_base}/join/{code}",
                                   state=clean, version=0, created=time.time(), creator=creator)
            result = await self.backend.create(record, self.limits.max_sessions, self.limits.idle_s,
                                               self.limits.max_sessions_per_address)
            if result is Admission.FULL:
                raise _too_many("too_many_sessions",
                                f"This server already runs {self.limits.max_sessions} class sessions; "
                                "close one or try again later.", 60)
            if result is Admission.CREATOR_FULL:
                raise _too_many("too_many_sessions_here",
                                f"{self.limits.max_sessions_per_address} class sessions were started from this "
                                "address and are still open; end one first.", 60)
            if result is Admission.OK:
                return {"code": code, "teacher_token": token, "join_url": record.join_url}
        raise ApiError(503, "no_free_code", "No free session code was found; try again.", {"Retry-After": "1"})

    async def info(self, code: str, authorization: str | None = None, client: str | None = None) -> dict[str, Any]:
        record = await (self._authorized(code, authorization, client) if authorization
                        else self._record(code, client))
        followers, submissions = await self.backend.counts(record.code)
        return {"code": record.code, "state": record.state, "followers": followers, "submissions": submissions,
                "version": record.version, "join_url": record.join_url}

    async def set_state(self, code: str, authorization: str | None, state: Any, client: str | None = None) -> dict[str, Any]:
        record = await self._authorized(code, authorization, client)
        clean = validate_state(state, self.limits.max_state_bytes)
        version = await self.backend.set_state(record.code, clean)
        if version is None:
            raise ApiError(404, "unknown_session", "The session ended.")
        if self.pins is not None:
            await self.pins.refresh_session(record.code)  # the teacher's new image stays; the old one may go
        return {"code": record.code, "version": version, "state": clean}

    async def close(self, code: str, authorization: str | None, client: str | None = None) -> None:
        record = await self._authorized(code, authorization, client)
        await self.backend.close(record.code)
        if self.pins is not None:
            self.pins.release(record.code)

    # the wall --------------------------------------------------------------------------------------------
    async def submit(self, code: str, image_id: Any, name: Any, student: str,
                     client: str | None = None) -> dict[str, Any]:
        record = await self._record(code, client)
        if not isinstance(image_id, str) or not IMAGE_ID.match(image_id):
            raise ApiError(422, "invalid_image_id", "image_id is the id an upload answered (64 hex digits).")
        display = clean_name(name, self.limits.max_name_chars)
        # The image must be here (or in the shared store) now, so the wall never shows a broken picture.
        await run_in_threadpool(self.predictions.require_image, image_id)
        submission = Submission(id=secrets.token_hex(6), image_id=image_id, name=display, submitted_at=time.time())
        if self.pins is not None:
            self.pins.add(record.code, image_id)  # pinned first: never evictable while on the wall
        result = await self.backend.add_submission(record.code, submission, student,
                                                   self.limits.max_submissions,
                                                   self.limits.max_submissions_per_student)
        if result is not Admission.OK and self.pins is not None:
            await self.pins.refresh_session(record.code)
        if result is Admission.GONE:
            raise ApiError(404, "unknown_session", "The session ended.")
        if result is Admission.FULL:
            raise _too_many("wall_full", f"The class wall is full ({self.limits.max_submissions} images); "
                            "the teacher can clear it.", 30)
        if result is Admission.STUDENT_FULL:
            raise _too_many("too_many_submissions",
                            f"You have sent {self.limits.max_submissions_per_student} images to this wall "
                            "already; wait until the teacher clears it.", 30)
        await self.backend.touch(record.code, self.limits.idle_s)
        return submission.as_json()

    async def wall(self, code: str, authorization: str | None, client: str | None = None) -> dict[str, Any]:
        record = await self._authorized(code, authorization, client)
        items = await self.backend.submissions(record.code)
        model = record.state.get("model") or self.default_model
        weights = record.state.get("weights", "auto")
        weights = weights if weights in _WEIGHTS else "auto"
        predicted = await run_in_threadpool(self.predictions.predict, model, weights,
                                            list(dict.fromkeys(item.image_id for item in items)))
        out = []
        for item in items:
            result = predicted["results"].get(item.image_id, {})
            top = result.get("predictions")
            out.append({**item.as_json(), "prediction": top[0] if top else None, "predictions": top or [],
                        **({"error": result["error"]} if "error" in result else {})})
        answer = {"code": record.code, "model": predicted["model"], "weights_used": predicted["weights_used"],
                  "submissions": out}
        if predicted.get("error"):
            answer["error"] = predicted["error"]
        return answer

    async def clear(self, code: str, authorization: str | None, client: str | None = None) -> None:
        record = await self._authorized(code, authorization, client)
        await self.backend.clear_submissions(record.code)
        if self.pins is not None:
            await self.pins.refresh_session(record.code)

    # following -------------------------------------------------------------------------------------------
    async def follow(self, code: str, last_event_id: int | None, client: str | None = None) -> FollowStream:
        """Admit a follower (404 / 429 before any byte is sent) and return its event stream."""
        record = await self._record(code, client)
        if self.backend.hub.closing:
            raise ApiError(503, "shutting_down", "The server is restarting; reconnect in a moment.",
                           {"Retry-After": "2"})
        follower = secrets.token_hex(8)
        ttl = self.limits.heartbeat_s * 3
        result = await self.backend.join(record.code, follower, self.limits.max_followers, ttl)
        if result is Admission.GONE:
            raise ApiError(404, "unknown_session", "The session ended.")
        if result is Admission.FULL:
            raise _too_many("too_many_followers",
                            f"This session already has {self.limits.max_followers} followers.", 10)
        return FollowStream(self._stream(record.code, follower, last_event_id),
                            lambda: self.backend.leave(record.code, follower))

    async def _stream(self, code: str, follower: str, last_seen: int | None) -> AsyncGenerator[bytes, None]:
        subscription = self.backend.hub.subscribe(code)  # before reading: no change can slip between
        self._streams += 1
        limits = self.limits
        try:
            yield f"retry: {limits.retry_ms}\n\n".encode()
            record = await self.backend.get(code)
            if record is None:
                yield sse_message("closed", {"code": code})
                return
            sent = record.version
            # Each state is a whole snapshot: a follower that saw version N needs only the latest, and
            # none at all when N is the latest (a reconnect after a dropped connection).
            if last_seen != record.version:
                yield sse_message("state", state_event(record.version, record.state), record.version)
            deadline = time.monotonic() + limits.max_stream_s
            while (remaining := deadline - time.monotonic()) > 0:
                changed, payload = await subscription.next(min(limits.heartbeat_s, remaining))
                if not changed:
                    if not await self.backend.refresh(code, follower, limits.heartbeat_s * 3):
                        yield sse_message("closed", {"code": code})
                        return
                    yield HEARTBEAT
                    continue
                if payload is None:  # the link to Redis was lost and is back: re-read
                    record = await self.backend.get(code)
                    payload = state_event(record.version, record.state) if record else {"type": "closed"}
                kind = payload.get("type")
                if kind == "shutdown":
                    return  # the client reconnects (to this server once it is back, or to another)
                if kind == "closed":
                    yield sse_message("closed", {"code": code})
                    return
                if kind == "state" and payload["version"] > sent:
                    sent = payload["version"]
                    yield sse_message("state", payload, sent)
            # Every stream is bounded in time; EventSource reconnects on its own with Last-Event-ID.
        except ApiError as exc:  # the session store failed mid-stream: end it, the client reconnects
            log.info("ending a follow stream of %s: %s", code, exc.message)
        finally:
            subscription.close()
            self._streams -= 1
            with anyio.move_on_after(2, shield=True):  # the stream may end by cancellation (a disconnect)
                try:
                    await self.backend.leave(code, follower)
                except Exception as exc:  # noqa: BLE001 - the follower's count times out anyway
                    log.debug("leaving session %s failed: %s", code, exc)


class FollowStream:
    """A follower's event stream whose :meth:`aclose` gives the follower's place back even when the stream
    never started (a client gone before the first byte), which a bare generator's ``finally`` cannot."""

    def __init__(self, events: AsyncGenerator[bytes, None], release: Callable[[], Awaitable[None]]) -> None:
        self._events = events
        self._release = release
        self._released = False

    def __aiter__(self) -> FollowStream:
        return self

    async def __anext__(self) -> bytes:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        await self._events.aclose()
        if not self._released:
            self._released = True
            with anyio.move_on_after(2, shield=True):
                try:
                    await self._release()
                except Exception as exc:  # noqa: BLE001 - the follower's count times out anyway
                    log.debug("releasing a follower failed: %s", exc)



