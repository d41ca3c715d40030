"""Sessions in Redis, shared by every replica pointed at the same ``CONVSCOPE_REDIS_URL``.

Layout (``P`` is the key prefix, default ``convscope:``): a hash ``P s:CODE`` (token digest, join URL, state
JSON, version, created), a sorted set of followers ``P s:CODE:f`` (scored by the time their count runs
out, so a replica that dies does not leave ghosts), the wall as a list ``P s:CODE:sub`` with per-student
counts in the hash ``P s:CODE:stu``, and an index of live sessions ``P sessions`` (scored by expiry). Every
key of a session carries the session's idle expiry, so Redis itself forgets abandoned sessions.

Each check-and-change is one Lua script (atomic in Redis). State changes are published on ``P ev:CODE``;
each replica holds ONE pattern subscription and wakes its own followers through the :class:`ChangeHub`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from redis.exceptions import RedisError

from server.errors import ApiError
from server.services.classroom.backend import (
    Admission,
    ChangeHub,
    SessionBackend,
    SessionRecord,
    Submission,
    state_image,
)

log = logging.getLogger("convscope")

_CREATE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
if tonumber(ARGV[11]) > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
  if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[11]) then return -2 end
end
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
redis.call('HSET', KEYS[2], 'token', ARGV[5], 'join_url', ARGV[6], 'state', ARGV[7], 'version', 0,
           'created', ARGV[8], 'creator', ARGV[10])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[9])
if ARGV[10] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[9])
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
end
return 1
"""

# The creator's set of sessions is named from the session hash (single Redis, not Redis Cluster).
_TOUCH = """
if redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 0 then return 0 end
for i = 2, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
redis.call('ZADD', KEYS[5], 'XX', ARGV[2], ARGV[3])
local creator = redis.call('HGET', KEYS[1], 'creator')
if creator and creator ~= '' then
  local key = ARGV[4] .. creator
  redis.call('ZADD', key, 'XX', ARGV[2], ARGV[3])
  redis.call('PEXPIRE', key, ARGV[1])
end
return 1
"""

_SET_STATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local v = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'state', ARGV[1])
redis.call('PUBLISH', ARGV[2], '{"type":"state","version":' .. v .. ',"state":' .. ARGV[1] .. '}')
return v
"""

_CLOSE = """
local creator = redis.call('HGET', KEYS[1], 'creator')
if creator and creator ~= '' then redis.call('ZREM', ARGV[3] .. creator, ARGV[1]) end
local existed = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[5], ARGV[1])
if existed == 1 then redis.call('PUBLISH', ARGV[2], '{"type":"closed"}') end
return existed
"""

_JOIN = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1
"""

_REFRESH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1
"""

_SUBMIT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[3]) then return 0 end
local n = tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0')
if n >= tonumber(ARGV[4]) then return -2 end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
end
return 1
"""

P = ParamSpec("P")
T = TypeVar("T")


def _reachable(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Redis down or unreachable: a 503 the client can retry, not a 500 (the server itself stays up)."""

    @functools.wraps(method)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except (RedisError, OSError) as exc:
            log.warning("session store: %s failed: %s", method.__name__, exc)
            raise ApiError(503, "sessions_unavailable", "The class-session store (Redis) cannot be reached "
                           "right now; try again in a moment.", {"Retry-After": "2"}) from exc

    return guarded


_RESULTS = {1: Admission.OK, 0: Admission.FULL, -1: Admission.GONE, -2: Admission.STUDENT_FULL}
_CREATE_RESULTS = {1: Admission.OK, 0: Admission.FULL, -2: Admission.CREATOR_FULL}


class RedisBackend(SessionBackend):
    def __init__(self, url: str, prefix: str = "convscope:", clock=time.time) -> None:  # type: ignore[no-untyped-def]
        import redis.asyncio as redis  # only needed when Redis is configured

        self.hub = ChangeHub()
        # Commands time out (a hung Redis answers 503, never holds a request); the subscription does not
        # (it is idle between changes), so it has its own connection pool.
        self._redis = redis.Redis.from_url(url, decode_responses=True, health_check_interval=30,
                                           socket_connect_timeout=5, socket_timeout=10)
        self._subscriber = redis.Redis.from_url(url, decode_responses=True, health_check_interval=30,
                                                socket_connect_timeout=5)
        self._prefix = prefix
        self._clock = clock
        self._scripts = {name: self._redis.register_script(source) for name, source in (
            ("create", _CREATE), ("touch", _TOUCH), ("set_state", _SET_STATE), ("close", _CLOSE),
            ("join", _JOIN), ("refresh", _REFRESH), ("submit", _SUBMIT))}
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    # keys ------------------------------------------------------------------------------------------------
    def _session(self, code: str) -> str:
        return f"{self._prefix}s:{code}"

    def _keys(self, code: str) -> list[str]:
        base = self._session(code)
        return [base, base + ":f", base + ":sub", base + ":stu"]

    def _channel(self, code: str) -> str:
        return f"{self._prefix}ev:{code}"

    @property
    def _index(self) -> str:
        return f"{self._prefix}sessions"

    @property
    def _creators(self) -> str:
        return f"{self._prefix}creator:"

    # lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self._redis.ping()  # fail at start-up, not at the first class, when Redis is unreachable
        self._listener = asyncio.create_task(self._listen(), name="convscope-session-events")
        await asyncio.wait_for(self._subscribed.wait(), 10)

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            try:
                await self._listener
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down either way
                pass
        await self._redis.aclose()
        await self._subscriber.aclose()

    async def _listen(self) -> None:
        """One pattern subscription per replica; reconnects with back-off and then re-syncs every follower."""
        pattern = self._channel("*")
        skip = len(self._channel(""))
        backoff = 0.2
        first = True
        while True:
            pubsub = self._subscriber.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(pattern)
                self._subscribed.set()
                if not first:
                    self.hub.resync_all()  # changes may have been published while we were away
                first = False
                backoff = 0.2
                while True:
                    message = await pubsub.get_message(timeout=30)
                    if message is None or message.get("type") != "pmessage":
                        continue
                    try:
                        payload = json.loads(message["data"])
                    except ValueError:
                        continue
                    self.hub.publish(message["channel"][skip:], payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a lost link must not end the listener
                log.warning("session events: Redis subscription lost (%s); reconnecting", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:  # noqa: BLE001
                    pass

    # sessions --------------------------------------------------------------------------------------------
    @_reachable
    async def create(self, record: SessionRecord, max_sessions: int, idle_s: float,
                     per_creator: int = 0) -> Admission | None:
        now = self._clock()
        result = await self._scripts["create"](
            keys=[self._index, self._session(record.code), self._creators + record.creator],
            args=[now, max_sessions, now + idle_s, int(idle_s * 1000), record.token_digest, record.join_url,
                  json.dumps(record.state), record.created, record.code, record.creator,
                  per_creator if record.creator else 0])
        return None if result == -1 else _CREATE_RESULTS[int(result)]

    @_reachable
    async def get(self, code: str) -> SessionRecord | None:
        fields = await self._redis.hgetall(self._session(code))
        if not fields or "token" not in fields:
            return None
        return SessionRecord(code=code, token_digest=fields["token"], join_url=fields["join_url"],
                             state=json.loads(fields["state"]), version=int(fields["version"]),
                             created=float(fields["created"]), creator=fields.get("creator", ""))

    @_reachable
    async def touch(self, code: str, idle_s: float) -> bool:
        result = await self._scripts["touch"](
            keys=[*self._keys(code), self._index],
            args=[int(idle_s * 1000), self._clock() + idle_s, code, self._creators])
        return bool(result)

    @_reachable
    async def set_state(self, code: str, state: dict[str, str]) -> int | None:
        encoded = json.dumps(state, separators=(",", ":"), ensure_ascii=False)
        version = await self._scripts["set_state"](keys=[self._session(code)], args=[encoded, self._channel(code)])
        return None if int(version) < 0 else int(version)

    @_reachable
    async def close(self, code: str) -> bool:
        result = await self._scripts["close"](keys=[*self._keys(code), self._index],
                                              args=[code, self._channel(code), self._creators])
        return bool(result)

    @_reachable
    async def expire_idle(self) -> list[str]:
        # Redis expires the keys itself; trim the index so the session cap counts only live sessions.
        await self._redis.zremrangebyscore(self._index, "-inf", self._clock())
        return []

    @_reachable
    async def session_count(self) -> int:
        await self.expire_idle()
        return int(await self._redis.zcard(self._index))

    # followers -------------------------------------------------------------------------------------------
    @_reachable
    async def join(self, code: str, follower_id: str, cap: int, ttl_s: float) -> Admission:
        now = self._clock()
        keys = self._keys(code)
        result = await self._scripts["join"](keys=keys[:2], args=[now, now + ttl_s, cap, follower_id])
        return _RESULTS[int(result)]

    @_reachable
    async def refresh(self, code: str, follower_id: str, ttl_s: float) -> bool:
        keys = self._keys(code)
        return bool(await self._scripts["refresh"](keys=keys[:2], args=[self._clock() + ttl_s, follower_id]))

    @_reachable
    async def leave(self, code: str, follower_id: str) -> None:
        await self._redis.zrem(self._keys(code)[1], follower_id)

    @_reachable
    async def counts(self, code: str) -> tuple[int, int]:
        keys = self._keys(code)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zcount(keys[1], f"({self._clock()}", "+inf")
            pipe.llen(keys[2])
            followers, submissions = await pipe.execute()
        return int(followers), int(submissions)

    # the wall --------------------------------------------------------------------------------------------
    @_reachable
    async def add_submission(self, code: str, submission: Submission, student: str,
                             per_session: int, per_student: int) -> Admission:
        keys = self._keys(code)
        result = await self._scripts["submit"](
            keys=[keys[0], keys[2], keys[3]],
            args=[json.dumps(submission.as_json()), student, per_session, per_student])
        return _RESULTS[int(result)]

    @_reachable
    async def submissions(self, code: str) -> list[Submission]:
        items = await self._redis.lrange(self._keys(code)[2], 0, -1)
        out = []
        for item in items:
            data: dict[str, Any] = json.loads(item)
            out.append(Submission(**data))
        return out

    @_reachable
    async def clear_submissions(self, code: str) -> None:
        keys = self._keys(code)
        await self._redis.delete(keys[2], keys[3])


    @_reachable
    async def referenced_images(self) -> dict[str, set[str]]:
        codes = await self._redis.zrangebyscore(self._index, f"({self._clock()}", "+inf")
        if not codes:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for code in codes:
                pipe.hget(self._session(code), "state")
                pipe.lrange(self._keys(code)[2], 0, -1)
            answers = await pipe.execute()
        images: dict[str, set[str]] = {}
        for code, state, items in zip(codes, answers[::2], answers[1::2], strict=True):
            if state is None:
                continue  # expired meanwhile
            images[code] = state_image(json.loads(state)) | {json.loads(item)["image_id"] for item in items}
        return images
