"""One student cannot wipe the class's images (issue 21 §3): about 170 uploads of noise used to push every
earlier upload out of the image store, and the class wall answered 404. Now each address has an upload
quota (429 + Retry-After), a flood evicts the flooder's own images first, and a live session's images
(its wall, the teacher's current image) stay until the session ends. Checked on the app and on a real
uvicorn with a small store, clients told apart by their addresses."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from starlette.types import Receive, Scope, Send

from server.main import create_app
from server.services.classroom import InProcessBackend
from server.services.classroom.backend import SessionRecord, Submission
from server.services.classroom.pins import SessionPins
from server.services.images import ImageStore
from server.settings import Settings
from tests.classroom_support import REDIS_SERVER, start_redis
from tests.harness import live_server

SIDE = 96  # a noise PNG of 96×96 RGB is ~28 KB, stored about the same


def noise_png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


ONE = len(noise_png(0))
FLOOD_ENV = {"CONVSCOPE_IMAGE_STORE_BUDGET_BYTES": str(10 * ONE), "CONVSCOPE_UPLOAD_QUOTA_COUNT": "24",
             "CONVSCOPE_UPLOAD_QUOTA_BYTES": str(200 * ONE)}


class AddressFromHeader:
    """Test wiring: the client's address is the ``x-test-peer`` header (TestClient has one fixed address)."""

    def __init__(self, app) -> None:  # noqa: ANN001 - an ASGI app
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            peer = dict(scope["headers"]).get(b"x-test-peer")
            if peer:
                scope = {**scope, "client": (peer.decode(), 40000)}
        await self.app(scope, receive, send)


def flood_scenario(post, get, delete) -> None:  # noqa: ANN001 - three callables (address, path, ...) → response
    """The class: a teacher showing an image, a student's image on the wall, another student's upload; then
    one address floods. Everything the class uses survives; the flooder meets its quota and loses its own."""
    teacher, student, other, flooder = "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"

    def upload(address: str, seed: int) -> httpx.Response:
        return post(address, "/api/images", files={"file": ("n.png", noise_png(seed), "image/png")})

    session = post(teacher, "/api/sessions", json={}).json()
    auth = {"Authorization": f"Bearer {session['teacher_token']}"}
    shown = upload(teacher, 1).json()["image_id"]
    assert post(teacher, f"/api/sessions/{session['code']}/state", method="PUT", headers=auth,
                json={"state": {"image": shown, "model": "lenet5"}}).status_code == 200
    on_wall = upload(student, 2).json()["image_id"]
    assert post(student, f"/api/sessions/{session['code']}/submissions",
                json={"image_id": on_wall, "name": "Ada"}).status_code == 201
    elsewhere = upload(other, 3).json()["image_id"]

    answers = [upload(flooder, 100 + i) for i in range(30)]
    statuses = [answer.status_code for answer in answers]
    assert statuses[:24] == [201] * 24 and set(statuses[24:]) == {429}, statuses
    refusal = answers[24]
    assert refusal.json()["error"]["code"] == "upload_quota" and int(refusal.headers["Retry-After"]) >= 1
    flood_ids = [answer.json()["image_id"] for answer in answers[:24]]

    for image_id in (shown, on_wall, elsewhere):
        assert get(teacher, f"/api/images/{image_id}").status_code == 200, image_id
    wall = get(teacher, f"/api/sessions/{session['code']}/submissions", headers=auth).json()
    assert [item["image_id"] for item in wall["submissions"]] == [on_wall]
    assert wall["submissions"][0]["prediction"] is not None and "error" not in wall["submissions"][0]
    assert get(other, f"/api/models/lenet5/images/{elsewhere}/predictions").status_code == 200
    assert get(flooder, f"/api/images/{flood_ids[0]}").status_code == 404  # its own oldest went first
    assert get(flooder, f"/api/images/{flood_ids[-1]}").status_code == 200
    assert upload(other, 4).status_code == 201  # the others' quotas are their own
    # The session ends: its images are no longer held (the next flood may take them).
    assert delete(teacher, f"/api/sessions/{session['code']}", headers=auth).status_code == 200


@pytest.fixture
def flood_app(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(storage_dir=tmp_path / "images", image_store_budget_bytes=10 * ONE, upload_quota_count=24,
                        upload_quota_bytes=200 * ONE)
    app = create_app(settings)
    with TestClient(AddressFromHeader(app)) as client:
        client.app_state = app.state  # type: ignore[attr-defined]
        yield client


def test_a_flood_from_one_address_spares_the_class_on_the_app(flood_app: TestClient) -> None:
    def post(address: str, path: str, method: str = "POST", headers: dict | None = None, **kw):  # noqa: ANN202
        return flood_app.request(method, path, headers={"x-test-peer": address, **(headers or {})}, **kw)

    def get(address: str, path: str, headers: dict | None = None):  # noqa: ANN202
        return flood_app.get(path, headers={"x-test-peer": address, **(headers or {})})

    def delete(address: str, path: str, headers: dict | None = None):  # noqa: ANN202
        return flood_app.delete(path, headers={"x-test-peer": address, **(headers or {})})

    flood_scenario(post, get, delete)
    store: ImageStore = flood_app.app_state.image_store  # type: ignore[attr-defined]
    assert store.pinned() == frozenset() and store.total_bytes <= 10 * ONE + ONE
    assert 0 < store.owned_bytes("127.0.0.4") <= 10 * ONE and store.owned_bytes("127.0.0.3") > ONE


@pytest.mark.slow
def test_a_flood_from_one_address_spares_the_class_on_a_real_server(tmp_path: Path) -> None:
    with live_server(tmp_path, FLOOD_ENV) as server:
        clients: dict[str, httpx.Client] = {}

        def at(address: str) -> httpx.Client:
            if address not in clients:
                clients[address] = httpx.Client(base_url=server.url, timeout=60,
                                                 transport=httpx.HTTPTransport(local_address=address))
            return clients[address]

        try:
            flood_scenario(lambda a, p, method="POST", **kw: at(a).request(method, p, **kw),
                           lambda a, p, **kw: at(a).get(p, **kw), lambda a, p, **kw: at(a).delete(p, **kw))
        finally:
            for client in clients.values():
                client.close()
        stored = sum(path.stat().st_size for path in (tmp_path / "images").glob("*.png"))
        assert stored <= 11 * ONE * 1.1, stored  # the budget (plus the newest image)


def _pins_scenario(backend, tmp_path: Path) -> None:  # noqa: ANN001 - a SessionBackend
    store = ImageStore(tmp_path, budget_bytes=10**9, max_pixels=10**7)
    pins = SessionPins(backend, store)
    a, b, c = "a" * 64, "b" * 64, "c" * 64

    async def scenario() -> None:
        await backend.start()
        try:
            record = SessionRecord("K7XQ2M", "digest", "http://x/join/K7XQ2M", {"image": a, "view": "layers"}, 0, 1.0)
            await backend.create(record, 10, 60)
            other = SessionRecord("P3RT9W", "digest", "http://x/join/P3RT9W", {"image": "mnist:7"}, 0, 1.0)
            await backend.create(other, 10, 60)
            await backend.add_submission("K7XQ2M", Submission("s1", b, "", 1.0), "x", 10, 10)
            await backend.add_submission("P3RT9W", Submission("s2", c, "", 1.0), "y", 10, 10)
            assert await backend.referenced_images() == {"K7XQ2M": {a, b}, "P3RT9W": {c}}
            await pins.refresh_all()
            assert store.pinned() == {a, b, c}
            await backend.clear_submissions("K7XQ2M")
            await pins.refresh_session("K7XQ2M")
            assert store.pinned() == {a, c}
            await backend.close("P3RT9W")
            await pins.refresh_all()  # ended elsewhere (another replica, or expiry): let go on the next read
            assert store.pinned() == {a}
        finally:
            await backend.aclose()

    asyncio.run(scenario())


def test_sessions_pin_their_images_in_process(tmp_path: Path) -> None:
    _pins_scenario(InProcessBackend(), tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(not Path(REDIS_SERVER).exists(), reason="redis-server is not installed")
def test_sessions_pin_their_images_with_redis(tmp_path: Path) -> None:
    pytest.importorskip("redis")
    from server.services.classroom.redis_backend import RedisBackend

    redis = start_redis(tmp_path)
    try:
        _pins_scenario(RedisBackend(redis.url, prefix="pins:"), tmp_path / "store")
    finally:
        redis.stop()
