"""The classroom service's parts without HTTP: codes, state and name rules, the join address, the
in-process backend (with a fake clock) and the change hub."""

from __future__ import annotations

import asyncio

import pytest

from server.errors import ApiError
from server.services.classroom import codes
from server.services.classroom.backend import Admission, ChangeHub, SessionRecord, Submission
from server.services.classroom.join_url import join_base
from server.services.classroom.memory import InProcessBackend
from server.services.classroom.state_rules import clean_name, validate_state


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(code: str = "ABCDEF") -> SessionRecord:
    return SessionRecord(code=code, token_digest=codes.token_digest("t"), join_url="http://x/join/" + code,
                         state={}, version=0, created=0.0)


def test_codes_are_unambiguous_and_normalised() -> None:
    assert not set("0O1lI") & set(codes.CODE_ALPHABET)
    for _ in range(200):
        code = codes.new_code()
        assert codes.normalize_code(code.lower()) == code
    assert codes.normalize_code("ABCDE0") is None and codes.normalize_code("ABC") is None
    assert codes.normalize_code(" k7xq2m ") == "K7XQ2M"


def test_tokens_are_long_and_compared_by_digest() -> None:
    token = codes.new_token()
    assert len(token) * 6 >= 128 and token != codes.new_token()
    digest = codes.token_digest(token)
    assert token not in digest and codes.token_matches(token, digest) and not codes.token_matches(token + "x", digest)


def test_state_rules() -> None:
    assert validate_state({"model": "lenet5", "session": "ABCDEF"}, 100) == {"model": "lenet5"}
    with pytest.raises(ApiError) as err:
        validate_state({"model": 1}, 100)
    assert err.value.status == 422
    with pytest.raises(ApiError) as err:
        validate_state({"a": "x" * 200}, 100)
    assert err.value.status == 413


def test_names() -> None:
    assert clean_name(None, 10) == ""
    assert clean_name("  Ada \u200b\u202eL.\x00 ", 10) == "Ada L."
    with pytest.raises(ApiError):
        clean_name("x" * 11, 10)
    with pytest.raises(ApiError):
        clean_name(5, 10)


def test_join_base(monkeypatch: pytest.MonkeyPatch) -> None:
    assert join_base("http", "localhost:8000", "127.0.0.1", "https://c.example/").url == "https://c.example"
    assert join_base("http", "10.0.0.5:8000", "0.0.0.0", None).url == "http://10.0.0.5:8000"
    local = join_base("http", "127.0.0.1:8000", "127.0.0.1", None)
    assert local.url == "http://127.0.0.1:8000" and "0.0.0.0" in local.warning
    monkeypatch.setattr("server.services.classroom.join_url.lan_address", lambda: "192.168.7.9")
    lan = join_base("http", "localhost:8000", "0.0.0.0", None)
    assert lan.url == "http://192.168.7.9:8000" and lan.warning is None
    monkeypatch.setattr("server.services.classroom.join_url.lan_address", lambda: None)
    assert join_base("http", "[::1]:8000", "0.0.0.0", None).warning


def test_in_process_backend_rules() -> None:
    async def scenario() -> None:
        clock = Clock()
        backend = InProcessBackend(clock)
        assert await backend.create(record("AAAAAA"), max_sessions=2, idle_s=60) is Admission.OK
        assert await backend.create(record("AAAAAA"), max_sessions=2, idle_s=60) is None  # code taken
        assert await backend.create(record("BBBBBB"), 2, 60) is Admission.OK
        assert await backend.create(record("CCCCCC"), 2, 60) is Admission.FULL
        mine = [SessionRecord(c, "d", "u", {}, 0, 0.0, creator="10.0.0.9") for c in ("DDDDDD", "EEEEEE")]
        spare = InProcessBackend(clock)
        assert await spare.create(mine[0], 9, 60, per_creator=1) is Admission.OK
        assert await spare.create(mine[1], 9, 60, per_creator=1) is Admission.CREATOR_FULL
        assert await spare.close("DDDDDD") and await spare.create(mine[1], 9, 60, per_creator=1) is Admission.OK
        # followers: a cap, and a count that runs out unless refreshed
        assert await backend.join("AAAAAA", "f1", cap=2, ttl_s=10) is Admission.OK
        assert await backend.join("AAAAAA", "f2", 2, 10) is Admission.OK
        assert await backend.join("AAAAAA", "f3", 2, 10) is Admission.FULL
        clock.now += 5
        assert await backend.refresh("AAAAAA", "f1", 10)
        clock.now += 6
        assert (await backend.counts("AAAAAA"))[0] == 1  # f2 timed out, f1 was refreshed
        await backend.leave("AAAAAA", "f1")
        assert (await backend.counts("AAAAAA"))[0] == 0
        # submissions: per student, then per session
        sub = Submission("s", "a" * 64, "", 0.0)
        assert await backend.add_submission("AAAAAA", sub, "x", per_session=3, per_student=2) is Admission.OK
        assert await backend.add_submission("AAAAAA", sub, "x", 3, 2) is Admission.OK
        assert await backend.add_submission("AAAAAA", sub, "x", 3, 2) is Admission.STUDENT_FULL
        assert await backend.add_submission("AAAAAA", sub, "y", 3, 2) is Admission.OK
        assert await backend.add_submission("AAAAAA", sub, "z", 3, 2) is Admission.FULL
        await backend.clear_submissions("AAAAAA")
        assert await backend.add_submission("AAAAAA", sub, "x", 3, 2) is Admission.OK
        # idle expiry: touched sessions live on, the others end and their followers hear it
        subscription = backend.hub.subscribe("BBBBBB")
        clock.now += 40
        assert await backend.touch("AAAAAA", 60)
        clock.now += 30
        assert await backend.expire_idle() == ["BBBBBB"]
        assert await backend.get("BBBBBB") is None and await backend.get("AAAAAA") is not None
        assert await subscription.next(1) == (True, {"type": "closed"})
        subscription.close()
        assert await backend.session_count() == 1
        assert await backend.add_submission("BBBBBB", sub, "x", 3, 2) is Admission.GONE

    asyncio.run(scenario())


def test_hub_gives_the_latest_state_and_loses_nothing() -> None:
    async def scenario() -> None:
        hub = ChangeHub()
        sub = hub.subscribe("X")
        assert await sub.next(0.01) == (False, None)
        hub.publish("X", {"type": "state", "version": 1})
        hub.publish("X", {"type": "state", "version": 2})
        assert await sub.next(1) == (True, {"type": "state", "version": 2})  # a slow follower skips to the latest
        hub.publish("X", {"type": "state", "version": 3})
        assert await sub.next(1) == (True, {"type": "state", "version": 3})
        hub.publish("Y", {"type": "state", "version": 9})  # nobody follows Y: nothing is kept
        assert hub.watching() == 1
        hub.shut_down()
        assert (await sub.next(1))[1] == {"type": "shutdown"}
        sub.close()
        sub.close()
        assert hub.watching() == 0 and not hub._channels

    asyncio.run(scenario())


def test_a_stream_that_ends_frees_its_follower_place_and_subscription() -> None:
    from server.services.classroom.service import Classroom, SessionLimits

    async def scenario() -> None:
        backend = InProcessBackend()
        classroom = Classroom(backend, SessionLimits(heartbeat_s=0.05, max_followers=2), predictions=None,  # type: ignore[arg-type]
                              default_model="lenet5")
        created = await classroom.create("http://x", {"view": "layers"})
        code = created["code"]
        streams = [await classroom.follow(code, None) for _ in range(2)]
        with pytest.raises(ApiError) as refused:
            await classroom.follow(code, None)
        assert refused.value.status == 429
        for stream in streams:
            assert await anext(stream) == b"retry: 2000\n\n"
            assert b"event: state" in await anext(stream)
        assert backend.hub.watching() == 2 and classroom.open_streams == 2
        assert await anext(streams[0]) == b": keep-alive\n\n"
        await streams[0].aclose()  # what a disconnect does (the response closes its generator)
        assert backend.hub.watching() == 1 and classroom.open_streams == 1
        assert (await backend.counts(code))[0] == 1
        never_started = await classroom.follow(code, None)  # the place is free again
        await never_started.aclose()  # a client gone before the first byte gives it back too
        assert (await backend.counts(code))[0] == 1
        classroom.shut_down_streams()  # a stopping server: the open stream ends without a word
        assert [chunk async for chunk in streams[1]] == []
        await streams[1].aclose()
        assert backend.hub.watching() == 0 and classroom.open_streams == 0
        assert (await backend.counts(code))[0] == 0

    asyncio.run(scenario())
