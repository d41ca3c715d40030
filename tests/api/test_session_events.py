"""The follow stream (Server-Sent Events) against a real uvicorn: the current state at once, each change,
heartbeats, Last-Event-ID, the follower cap and count, closing, and a stop that open streams cannot hold."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from tests.classroom_support import Server, next_event, sse_events, start_server
from tests.harness import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("events"), {
        "CONVSCOPE_SSE_HEARTBEAT_S": "0.3", "CONVSCOPE_MAX_FOLLOWERS_PER_SESSION": "3",
        "CONVSCOPE_MAX_SESSIONS_PER_ADDRESS": "0"})  # every test's session comes from 127.0.0.1
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=20) as client:
        yield client


def start(http: httpx.Client, state: dict | None = None) -> tuple[str, dict[str, str]]:
    data = http.post("/api/sessions", json={"state": state} if state else None).json()
    return data["code"], {"Authorization": f"Bearer {data['teacher_token']}"}


def test_stream_sends_the_state_at_once_then_every_change(http: httpx.Client) -> None:
    code, teacher = start(http, {"model": "lenet5", "view": "overview"})
    with http.stream("GET", f"/api/sessions/{code}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"].startswith("no-cache")
        events = sse_events(response.iter_lines())
        assert next(events) == {"retry": "2000"}
        first = next_event(events)
        assert first["id"] == "0" and first["data"]["state"] == {"model": "lenet5", "view": "overview"}
        for version, view in enumerate(["layers", "stepper", "sandbox"], start=1):
            state = {"model": "lenet5", "view": view, "layer": "conv1"}
            assert http.put(f"/api/sessions/{code}/state", json={"state": state}, headers=teacher).status_code == 200
            event = next_event(events)
            assert event["id"] == str(version) and event["data"] == {"type": "state", "version": version,
                                                                       "state": state}


def test_quiet_streams_get_heartbeats(http: httpx.Client) -> None:
    code, _ = start(http)
    with http.stream("GET", f"/api/sessions/{code}/events") as response:
        events = sse_events(response.iter_lines())
        next_event(events)
        beats = [next(events) for _ in range(2)]
        assert beats == [{"comment": "keep-alive"}] * 2


def test_last_event_id_is_honoured(http: httpx.Client) -> None:
    code, teacher = start(http)
    for view in ("layers", "saliency"):
        http.put(f"/api/sessions/{code}/state", json={"state": {"view": view}}, headers=teacher)
    # up to date (version 2): no state is repeated, the next change comes as version 3
    with http.stream("GET", f"/api/sessions/{code}/events", headers={"Last-Event-ID": "2"}) as response:
        events = sse_events(response.iter_lines())
        next(events)  # retry hint
        assert next(events) == {"comment": "keep-alive"}
        http.put(f"/api/sessions/{code}/state", json={"state": {"view": "stepper"}}, headers=teacher)
        event = next_event(events)
        assert event["id"] == "3" and event["data"]["state"] == {"view": "stepper"}
    # behind (saw version 1): the latest state at once — each state is a whole snapshot
    with http.stream("GET", f"/api/sessions/{code}/events", headers={"Last-Event-ID": "1"}) as response:
        event = next_event(sse_events(response.iter_lines()))
        assert event["id"] == "3" and event["data"]["state"] == {"view": "stepper"}
    # garbage: treated as never having seen anything
    with http.stream("GET", f"/api/sessions/{code}/events", headers={"Last-Event-ID": "x'; DROP"}) as response:
        assert next_event(sse_events(response.iter_lines()))["id"] == "3"


def test_follower_cap_and_count_follow_connections(http: httpx.Client, server: Server) -> None:
    code, teacher = start(http)
    with ExitStack() as stack:
        clients = [stack.enter_context(httpx.Client(base_url=server.url, timeout=20)) for _ in range(4)]
        streams, readers = [], []  # keep the readers: dropping one closes its connection
        for client in clients[:3]:
            response = stack.enter_context(client.stream("GET", f"/api/sessions/{code}/events"))
            readers.append(sse_events(response.iter_lines()))
            next_event(readers[-1])
            streams.append(response)
        assert http.get(f"/api/sessions/{code}").json()["followers"] == 3
        refused = clients[3].get(f"/api/sessions/{code}/events")
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_followers"
        assert refused.headers["Retry-After"]
        streams[0].close()
        clients[0].close()  # the connection goes: its place is freed
        wait_until(lambda: http.get(f"/api/sessions/{code}").json()["followers"] == 2, what="the count to drop")
        with clients[3].stream("GET", f"/api/sessions/{code}/events") as response:
            assert response.status_code == 200
            next_event(sse_events(response.iter_lines()))
        del readers
    wait_until(lambda: http.get(f"/api/sessions/{code}").json()["followers"] == 0, what="every follower to leave")


def test_unknown_session_stream_is_404_json(http: httpx.Client) -> None:
    response = http.get("/api/sessions/ZZZZZZ/events")
    assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_session"


def test_closing_the_session_ends_every_stream(http: httpx.Client) -> None:
    code, teacher = start(http)
    with http.stream("GET", f"/api/sessions/{code}/events") as response:
        events = sse_events(response.iter_lines())
        next_event(events)
        assert http.delete(f"/api/sessions/{code}", headers=teacher).status_code == 200
        assert next_event(events, "closed")["data"] == {"code": code}
        assert list(events) == []  # and the stream ends


def test_open_streams_do_not_hold_a_stopping_server(tmp_path) -> None:
    server = start_server(tmp_path, {"CONVSCOPE_SSE_HEARTBEAT_S": "30"}, name="stopping")
    try:
        with httpx.Client(base_url=server.url, timeout=20) as http:
            code, _ = start(http)
            with ExitStack() as stack:
                readers = []
                for _ in range(3):
                    response = stack.enter_context(http.stream("GET", f"/api/sessions/{code}/events"))
                    readers.append(sse_events(response.iter_lines()))
                    next_event(readers[-1])
                server.stop(timeout=20)
                # SIGTERM ended the streams and uvicorn finished by itself (re-raising the signal, as it
                # does after a graceful stop): no SIGKILL was needed, no response had to be cancelled
                assert server.process.returncode in (0, -signal.SIGTERM), server.log()
                assert "Cancel" not in server.log()
                assert list(readers[0]) == []  # the stream ended cleanly
    finally:
        server.stop()


def test_head_of_the_event_stream_ends_at_once_and_frees_its_place(http: httpx.Client) -> None:
    """HEAD runs as a GET that sends only its head: an event stream must not stay open behind it."""
    code, _ = start(http)
    response = http.head(f"/api/sessions/{code}/events")
    assert response.status_code == 200 and response.content == b""
    assert response.headers["content-type"].startswith("text/event-stream")
    wait_until(lambda: http.get(f"/api/sessions/{code}").json()["followers"] == 0, what="the follower place to be freed")
    for _ in range(4):  # more HEADs than the follower cap (3): none keeps a place
        assert http.head(f"/api/sessions/{code}/events").status_code == 200
    with http.stream("GET", f"/api/sessions/{code}/events") as stream:
        assert stream.status_code == 200
