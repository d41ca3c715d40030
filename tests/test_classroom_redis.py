"""Sessions in Redis: the backend contract against a real redis-server, and two uvicorn replicas sharing a
session (teacher on one, students on the other; the image store is a shared directory)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from server.services.classroom.backend import Admission, SessionRecord, Submission
from server.services.classroom.codes import token_digest
from tests.classroom_support import (
    REDIS_SERVER,
    RedisServer,
    Server,
    next_event,
    same_predictions,
    sse_events,
    start_redis,
    start_server,
)
from tests.conftest import png_bytes

pytest.importorskip("redis")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(REDIS_SERVER).exists(), reason="redis-server is not installed (apt install redis-server)"),
]



def test_redis_backend_contract(redis_server: RedisServer) -> None:
    from server.services.classroom.redis_backend import RedisBackend

    async def scenario() -> None:
        backend = RedisBackend(redis_server.url, prefix="contract:")
        other = RedisBackend(redis_server.url, prefix="contract:")  # a second replica
        await backend.start()
        await other.start()
        try:
            record = SessionRecord("AAAAAA", token_digest("t"), "http://x/join/AAAAAA", {"view": "layers"}, 0, 1.0)
            assert await backend.create(record, max_sessions=2, idle_s=60) is Admission.OK
            assert await backend.create(record, 2, 60) is None
            assert await other.create(SessionRecord("BBBBBB", "d", "u", {}, 0, 1.0), 2, 60) is Admission.OK
            assert await backend.create(SessionRecord("CCCCCC", "d", "u", {}, 0, 1.0), 2, 60) is Admission.FULL
            # sessions per creator (address), across replicas; closing one frees its place
            assert await backend.create(SessionRecord("DDDDDD", "d", "u", {}, 0, 1.0, "10.0.0.9"), 9, 60, 2) \
                is Admission.OK
            assert await other.create(SessionRecord("EEEEEE", "d", "u", {}, 0, 1.0, "10.0.0.9"), 9, 60, 2) \
                is Admission.OK
            assert await backend.create(SessionRecord("FFFFFF", "d", "u", {}, 0, 1.0, "10.0.0.9"), 9, 60, 2) \
                is Admission.CREATOR_FULL
            assert await backend.create(SessionRecord("GGGGGG", "d", "u", {}, 0, 1.0, "10.0.0.8"), 9, 60, 2) \
                is Admission.OK
            assert await other.touch("DDDDDD", 60)
            assert await other.close("DDDDDD")
            assert await backend.create(SessionRecord("FFFFFF", "d", "u", {}, 0, 1.0, "10.0.0.9"), 9, 60, 2) \
                is Admission.OK
            for code in ("EEEEEE", "FFFFFF", "GGGGGG"):
                assert await backend.close(code)
            assert (await other.get("AAAAAA")) == record
            # a change made through one replica wakes the other's followers
            subscription = other.hub.subscribe("AAAAAA")
            assert await backend.set_state("AAAAAA", {"view": "saliency"}) == 1
            changed, payload = await subscription.next(5)
            assert changed and payload == {"type": "state", "version": 1, "state": {"view": "saliency"}}
            # a lost subscription reconnects and tells followers to re-read (changes may have been missed)
            import redis

            with redis.Redis.from_url(redis_server.url) as admin:
                assert admin.client_kill_filter(_type="pubsub") >= 2
            assert await subscription.next(10) == (True, None)
            assert await backend.set_state("AAAAAA", {"view": "stepper"}) == 2
            assert (await subscription.next(10))[1]["version"] == 2
            await backend.set_state("AAAAAA", {"view": "saliency"})
            assert (await subscription.next(10))[1]["version"] == 3
            # followers are counted across replicas, with a cap
            assert await backend.join("AAAAAA", "f1", cap=2, ttl_s=30) is Admission.OK
            assert await other.join("AAAAAA", "f2", 2, 30) is Admission.OK
            assert await other.join("AAAAAA", "f3", 2, 30) is Admission.FULL
            assert await backend.join("AAAAAA", "f4", 2, 0.01) is Admission.FULL
            await other.leave("AAAAAA", "f2")
            assert (await backend.counts("AAAAAA"))[0] == 1
            assert await backend.refresh("AAAAAA", "f1", 30) and not await backend.refresh("ZZZZZZ", "f1", 30)
            # the wall, with both caps
            sub = Submission("s1", "a" * 64, "Ada", 2.0)
            assert await backend.add_submission("AAAAAA", sub, "x", per_session=3, per_student=2) is Admission.OK
            assert await other.add_submission("AAAAAA", sub, "x", 3, 2) is Admission.OK
            assert await backend.add_submission("AAAAAA", sub, "x", 3, 2) is Admission.STUDENT_FULL
            assert await other.add_submission("AAAAAA", sub, "y", 3, 2) is Admission.OK
            assert await backend.add_submission("AAAAAA", sub, "z", 3, 2) is Admission.FULL
            assert await other.submissions("AAAAAA") == [sub, sub, sub]
            await other.clear_submissions("AAAAAA")
            assert await backend.counts("AAAAAA") == (1, 0)
            assert await backend.add_submission("AAAAAA", sub, "x", 3, 2) is Admission.OK
            # idle expiry is Redis's own, on every key of the session
            assert await backend.touch("AAAAAA", 0.3)
            deadline = time.monotonic() + 10
            while await other.get("AAAAAA") is not None:
                assert time.monotonic() < deadline, "the session never expired"
                await asyncio.sleep(0.05)
            assert await backend.add_submission("AAAAAA", sub, "x", 3, 2) is Admission.GONE
            assert await backend.session_count() == 1
            # closing tells every replica's followers
            closing = backend.hub.subscribe("BBBBBB")
            assert await other.close("BBBBBB") and not await other.close("BBBBBB")
            assert await closing.next(5) == (True, {"type": "closed"})
            subscription.close()
            closing.close()
            assert await backend.session_count() == 0
        finally:
            await backend.aclose()
            await other.aclose()

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def replicas(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    shared = tmp_path_factory.mktemp("replicas")  # one image directory for both, as documented
    env = {"CONVSCOPE_REDIS_URL": redis_server.url, "CONVSCOPE_SSE_HEARTBEAT_S": "0.5"}
    first = start_server(shared, env, name="replica-a")
    try:
        second = start_server(shared, env, name="replica-b")
        try:
            yield first, second
        finally:
            second.stop()
    finally:
        first.stop()


def test_teacher_on_one_replica_students_on_another(replicas: tuple[Server, Server]) -> None:
    a, b = replicas
    with httpx.Client(base_url=a.url, timeout=30) as teacher_http, httpx.Client(base_url=b.url, timeout=30) as student:
        created = teacher_http.post("/api/sessions", json={"state": {"model": "lenet5", "view": "overview"}}).json()
        code = created["code"]
        teacher = {"Authorization": f"Bearer {created['teacher_token']}"}
        assert student.get(f"/api/sessions/{code}").json()["state"] == {"model": "lenet5", "view": "overview"}
        with student.stream("GET", f"/api/sessions/{code}/events") as response:
            events = sse_events(response.iter_lines())
            assert next_event(events)["data"]["state"]["view"] == "overview"
            assert teacher_http.get(f"/api/sessions/{code}").json()["followers"] == 1  # counted on A too
            put = teacher_http.put(f"/api/sessions/{code}/state", headers=teacher,
                                   json={"state": {"model": "lenet5", "view": "layers", "layer": "conv2"}})
            assert put.status_code == 200
            event = next_event(events)
            assert event["id"] == "1" and event["data"]["state"]["layer"] == "conv2"
            # a student uploads and submits on B; the teacher's wall on A predicts it
            image = (np.random.default_rng(13).random((28, 28)) * 255).astype(np.uint8)
            image_id = student.post("/api/images", files={"file": ("d.png", png_bytes(image))}).json()["image_id"]
            sent = student.post(f"/api/sessions/{code}/submissions", json={"image_id": image_id, "name": "Bea"})
            assert sent.status_code == 201
            wall = teacher_http.get(f"/api/sessions/{code}/submissions", headers=teacher).json()
            reference = teacher_http.get(f"/api/models/lenet5/images/{image_id}/predictions?top_k=3").json()
            assert [s["name"] for s in wall["submissions"]] == ["Bea"]
            assert same_predictions(wall["submissions"][0]["predictions"], reference["predictions"])
            # closing on A ends the stream on B
            assert teacher_http.delete(f"/api/sessions/{code}", headers=teacher).status_code == 200
            assert next_event(events, "closed")["data"] == {"code": code}
        assert student.get(f"/api/sessions/{code}").status_code == 404


def test_an_unreachable_redis_answers_503_and_the_server_stays_up(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from server.main import create_app
    from server.settings import Settings

    redis_server = start_redis(tmp_path)
    try:
        settings = Settings(storage_dir=tmp_path / "images", redis_url=redis_server.url)
        with TestClient(create_app(settings)) as client:
            created = client.post("/api/sessions").json()
            code = created["code"]
            assert client.get(f"/api/sessions/{code}").status_code == 200
            redis_server.stop()
            for response in (client.get(f"/api/sessions/{code}"), client.post("/api/sessions"),
                             client.get(f"/api/sessions/{code}/events")):
                assert response.status_code == 503, response.text
                assert response.json()["error"]["code"] == "sessions_unavailable"
                assert response.headers["Retry-After"]
            assert client.get("/api/health").status_code == 200
    finally:
        redis_server.stop()
