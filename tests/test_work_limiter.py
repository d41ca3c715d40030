"""The bounded queue for model work: a few compute, a few wait, the rest hear 503 + Retry-After at once;
slots always come back, whatever happens inside."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from server.errors import ApiError
from server.main import create_app
from server.services.work.limiter import WorkLimiter
from server.settings import Settings
from tests.conftest import png_bytes
from tests.harness import wait_until


def test_full_queue_is_refused_at_once_with_retry_after() -> None:
    limiter = WorkLimiter(max_active=1, max_waiting=1, wait_timeout_s=60.0, retry_after_s=2)
    entered = []

    def waiter() -> None:
        with limiter.admit():
            entered.append(True)

    with limiter.admit():
        thread = threading.Thread(target=waiter)
        thread.start()
        wait_until(lambda: limiter.waiting == 1)
        started = time.monotonic()
        with pytest.raises(ApiError) as info:
            with limiter.admit():
                pass
        refused_after = time.monotonic() - started
        assert not entered  # the waiter is still waiting for the slot held here
    thread.join(10)
    assert entered == [True]
    assert info.value.status == 503 and info.value.code == "overloaded"
    assert info.value.headers == {"Retry-After": "2"}
    assert refused_after < limiter.wait_timeout_s / 10  # at once, not after a queueing timeout
    assert limiter.active == 0 and limiter.waiting == 0 and limiter.rejected == 1


def test_waiting_too_long_gives_up_with_retry_after_and_frees_its_place() -> None:
    limiter = WorkLimiter(max_active=1, max_waiting=4, wait_timeout_s=0.2)
    with limiter.admit():
        with pytest.raises(ApiError) as info:
            with limiter.admit():
                pass
        assert limiter.waiting == 0
    assert info.value.status == 503 and "Retry-After" in info.value.headers
    assert limiter.active == 0


def test_slots_come_back_after_errors_and_concurrency_is_capped() -> None:
    limiter = WorkLimiter(max_active=2, max_waiting=64)
    peak = 0
    inside = 0
    lock = threading.Lock()

    def work(i: int) -> None:
        nonlocal peak, inside
        try:
            with limiter.admit():
                with lock:
                    inside += 1
                    peak = max(peak, inside)
                time.sleep(0.005)
                with lock:
                    inside -= 1
                if i % 3 == 0:
                    raise ValueError("a failing computation")
        except ValueError:
            pass

    threads = [threading.Thread(target=work, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert peak == 2
    assert limiter.active == 0 and limiter.waiting == 0 and limiter.rejected == 0


@pytest.fixture
def tight_client(tmp_path) -> TestClient:
    # no express slot: LeNet's quick predictions would take it while the only slot is held
    settings = Settings(storage_dir=tmp_path / "images", max_active_work=1, max_waiting_work=0, express_work=0)
    with TestClient(create_app(settings)) as client:
        yield client


def test_api_answers_overload_with_503_and_recovers(tight_client: TestClient, upload) -> None:
    image_id = upload(tight_client, png_bytes(np.full((28, 28), 90, dtype=np.uint8)))
    other = upload(tight_client, png_bytes(np.full((28, 28), 30, dtype=np.uint8)))
    url = f"/api/models/lenet5/images/{other}/predictions"
    assert tight_client.get(f"/api/models/lenet5/images/{image_id}/predictions").status_code == 200
    limiter: WorkLimiter = tight_client.app.state.limiter  # type: ignore[attr-defined]
    with limiter.admit():  # the only compute slot is busy and nothing may queue
        busy = tight_client.get(url)  # a new image: model work (the first one's logits are cached now)
        cheap = tight_client.get("/api/models")  # requests without model work are not held up
    assert busy.status_code == 503
    assert busy.headers["retry-after"].isdigit()
    assert busy.json()["error"]["code"] == "overloaded"
    assert cheap.status_code == 200
    assert tight_client.get(url).status_code == 200  # and everything works again
    assert limiter.active == 0 and limiter.waiting == 0


# --- the upload gate: a few uploads in memory at once, the rest wait with their bodies unread ----------

def test_upload_gate_queues_then_refuses() -> None:
    import anyio

    from server.services.images.upload import UploadGate

    async def scenario() -> list[str]:
        gate = UploadGate(max_active=1, max_waiting=1, wait_timeout_s=30, retry_after_s=3)
        events: list[str] = []

        async def second() -> None:
            async with gate.admit():
                events.append("second in")

        async with anyio.create_task_group() as tasks:
            async with gate.admit():
                tasks.start_soon(second)
                while gate.waiting == 0:
                    await anyio.sleep(0.001)
                try:
                    async with gate.admit():
                        events.append("third in")
                except ApiError as exc:
                    events.append(f"third refused {exc.status} {exc.headers['Retry-After']}")
                events.append("first out")
        assert gate.active == 0 and gate.waiting == 0
        timed = UploadGate(max_active=1, max_waiting=4, wait_timeout_s=0.05)
        async with timed.admit():
            try:
                async with timed.admit():
                    events.append("late in")
            except ApiError as exc:
                events.append(f"late refused {exc.status}")
        assert timed.active == 0 and timed.waiting == 0
        return events

    assert anyio.run(scenario) == ["third refused 503 3", "first out", "second in", "late refused 503"]


def test_busy_upload_gate_answers_before_reading_the_body(tmp_path) -> None:
    import anyio

    from tests.harness import CountingBody, asgi_post

    app = create_app(Settings(storage_dir=tmp_path / "images", max_active_uploads=1, max_waiting_uploads=0))
    png = png_bytes(np.full((8, 8), 5, dtype=np.uint8))
    with TestClient(app) as client:
        body = CountingBody(png, b"", 0)
        headers = [(b"content-type", b"image/png")]

        async def busy() -> tuple[int, bytes]:
            async with app.state.upload_gate.admit():  # type: ignore[attr-defined]
                return await asgi_post(app, headers, body)

        status, content = anyio.run(busy)
        assert status == 503 and b'"overloaded"' in content
        assert body.pulled == 0  # refused without touching the body
        assert client.post("/api/images", content=png, headers={"content-type": "image/png"}).status_code == 201


def test_real_server_sheds_overload_promptly(tmp_path) -> None:
    """A real uvicorn with one compute slot and one queue place, hit by 12 clients at once with uncached
    Score-CAM work (heavy: its own pool, sized here to one slot and one queue place, with no per-client cap):
    the excess hears 503 + Retry-After straight away, the rest succeed, nothing else."""
    import asyncio

    import httpx

    from tests.harness import serving

    settings = Settings(storage_dir=tmp_path / "images", max_active_heavy_work=1, max_waiting_heavy_work=1,
                        heavy_work_wait_timeout_s=60, heavy_work_per_client=100)
    app = create_app(settings)
    with serving(app) as port:
        base = f"http://127.0.0.1:{port}"
        ids = [httpx.post(f"{base}/api/images", files={"file": ("a.png", png_bytes(np.full((32, 32), v, np.uint8)))}
                          ).json()["image_id"] for v in range(12)]
        assert httpx.get(f"{base}/api/models/tinyvgg-shapes/images/{ids[0]}/predictions").status_code == 200

        async def one(client: httpx.AsyncClient, image_id: str) -> tuple[int, float, str | None]:
            started = time.perf_counter()
            response = await client.get(f"/api/models/tinyvgg-shapes/images/{image_id}/saliency.npy?method=scorecam")
            return response.status_code, time.perf_counter() - started, response.headers.get("retry-after")

        async def burst() -> list[tuple[int, float, str | None]]:
            async with httpx.AsyncClient(base_url=base, timeout=120) as client:
                return await asyncio.gather(*(one(client, i) for i in ids[1:]))

        results = asyncio.run(burst())
    statuses = [status for status, _, _ in results]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) >= 1 and statuses.count(200) >= 2, statuses
    refused = [seconds for status, seconds, _ in results if status == 503]
    assert all(retry and retry.isdigit() for status, _, retry in results if status == 503)
    assert max(refused) < settings.heavy_work_wait_timeout_s / 4  # told at once, not after queueing until a timeout
    assert app.state.heavy_limiter.rejected == statuses.count(503)
