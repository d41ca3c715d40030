"""Abandoned work stops: a client that disconnects from a long saliency run cancels it (progress stops
advancing, its pool slot comes back, a cheap request is served) unless another client waits for the same
result; and heavy work runs in its own pool, fairly shared between clients."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from server.main import create_app
from server.settings import Settings
from tests.conftest import png_bytes
from tests.harness import assert_no_hooks, serving, wait_until

MODEL = "resnet18"  # Score-CAM at layer4: 512 masked passes in 16 batches, a checkpoint after each


def _open_request(port: int, path: str, headers: dict[str, str] | None = None) -> socket.socket:
    """Send a GET and leave the answer unread (the caller closes the socket: a disconnect)."""
    sock = socket.create_connection(("127.0.0.1", port))
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode())
    return sock


@pytest.fixture
def live(tmp_path: Path):
    app = create_app(Settings(storage_dir=tmp_path / "images", max_active_heavy_work=1))
    with serving(app) as port:
        base = f"http://127.0.0.1:{port}"
        rng = np.random.default_rng(5)
        with httpx.Client(base_url=base, timeout=120) as client:
            def upload(array: np.ndarray) -> str:
                r = client.post("/api/images", files={"file": ("x.png", png_bytes(array), "image/png")})
                assert r.status_code == 201, r.text
                return r.json()["image_id"]

            photo = upload(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))
            digit = upload(rng.integers(0, 256, (28, 28), dtype=np.uint8))
            yield app, port, client, photo, digit


def _progress(client: httpx.Client, photo: str) -> dict:
    r = client.get(f"/api/models/{MODEL}/images/{photo}/saliency/progress",
                   params={"method": "scorecam", "weights": "untrained"})
    assert r.status_code == 200
    return r.json()


def test_a_client_that_disconnects_stops_its_long_run(live) -> None:
    app, port, client, photo, digit = live
    path = f"/api/models/{MODEL}/images/{photo}/saliency.npy?method=scorecam&weights=untrained"
    sock = _open_request(port, path)
    wait_until(lambda: _progress(client, photo)["done"] > 0)  # the run is under way
    seen = _progress(client, photo)
    sock.close()  # the client gives up
    cache = app.state.saliency_maps.cache
    wait_until(lambda: _progress(client, photo)["state"] == "idle")  # the run ended…
    assert cache.stats.cancelled == 1  # …because it was cancelled, half-way
    assert seen["done"] < seen["total"]
    assert app.state.heavy_limiter.active == 0  # its slot came back
    # and nothing advances any more: the run's flight is over (its computation returned), so no progress
    # report can come; the board forgot the run
    wait_until(lambda: not cache._flights, what="the cancelled flight to end")
    assert _progress(client, photo) == {"state": "idle", "done": 0, "total": 0}
    # a cheap request is served at once (no heavy work left, and it never queued behind it anyway)
    r = client.get(f"/api/models/lenet5/images/{digit}/predictions")
    assert r.status_code == 200 and len(r.json()["predictions"]) == 5
    assert_no_hooks(app.state.runtime.load(MODEL, "untrained").module)


def test_the_run_goes_on_while_another_client_waits_for_it(live) -> None:
    app, port, client, photo, _ = live
    path = f"/api/models/{MODEL}/images/{photo}/saliency.npy?method=scorecam&weights=untrained"
    first = _open_request(port, path)
    wait_until(lambda: _progress(client, photo)["done"] > 0)
    answer: dict[str, httpx.Response] = {}
    second = threading.Thread(target=lambda: answer.setdefault("r", client.get(path, timeout=600)))
    second.start()
    cache = app.state.saliency_maps.cache
    wait_until(lambda: app.state.shared_answers.waiting == 1)  # the second client waits for the first's answer
    first.close()  # the first gives up; the second still waits: the run must go on
    second.join(600)
    assert answer["r"].status_code == 200
    assert cache.stats.cancelled == 0 and cache.stats.computations == 1
    assert app.state.shared_answers.stats.copied == 1


def test_the_run_goes_on_while_another_client_waits_for_it_in_the_cache(live) -> None:
    """The same through the result cache: the second request asks for another file of the same run (the PNG,
    not the .npy), so it is not the same request; it waits in the cache's flight."""
    app, port, client, photo, _ = live
    path = f"/api/models/{MODEL}/images/{photo}/saliency.npy?method=scorecam&weights=untrained"
    first = _open_request(port, path)
    wait_until(lambda: _progress(client, photo)["done"] > 0)
    answer: dict[str, httpx.Response] = {}
    png = path.replace("saliency.npy", "saliency.png")
    second = threading.Thread(target=lambda: answer.setdefault("r", client.get(png, timeout=600)))
    second.start()
    cache = app.state.saliency_maps.cache
    wait_until(lambda: cache.waiting == 1)
    first.close()
    second.join(600)
    assert answer["r"].status_code == 200 and answer["r"].headers["content-type"] == "image/png"
    assert cache.stats.cancelled == 0 and cache.stats.computations == 1


def test_cheap_work_is_served_while_the_heavy_pool_is_busy(live) -> None:
    app, port, client, photo, digit = live
    path = f"/api/models/{MODEL}/images/{photo}/saliency.npy?method=scorecam&weights=untrained"
    sock = _open_request(port, path)
    try:
        wait_until(lambda: app.state.heavy_limiter.active == 1)
        r = client.get(f"/api/models/lenet5/images/{digit}/predictions")
        assert r.status_code == 200
        assert app.state.heavy_limiter.active == 1  # served while the heavy run still holds its slot
        assert client.get("/api/health").status_code == 200
        assert client.get("/api/sandbox/presets").status_code == 200
    finally:
        sock.close()
    wait_until(lambda: app.state.heavy_limiter.active == 0)


def test_one_client_gets_a_bounded_share_of_the_heavy_pool(live) -> None:
    app, port, client, photo, _ = live
    rng = np.random.default_rng(9)
    others = [client.post("/api/images", files={"file": ("x.png", png_bytes(
        rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)), "image/png")}).json()["image_id"] for _ in range(3)]
    share = app.state.settings.heavy_work_per_client
    socks = [_open_request(port, f"/api/models/{MODEL}/images/{i}/saliency.npy?method=scorecam&weights=untrained",
                           {"X-ConvScope-Client": "greedy"}) for i in [photo, *others][:share]]
    try:
        wait_until(lambda: app.state.heavy_limiter.held_by("127.0.0.1/greedy") == share)
        extra = client.get(f"/api/models/{MODEL}/images/{others[-1]}/saliency.npy",
                           params={"method": "occlusion", "weights": "untrained"},
                           headers={"X-ConvScope-Client": "greedy"})
        assert extra.status_code == 429, extra.text
        assert extra.json()["error"]["code"] == "too_many_requests"
        assert int(extra.headers["retry-after"]) >= 1
    finally:
        for sock in socks:
            sock.close()
    wait_until(lambda: app.state.heavy_limiter.active == 0 and app.state.heavy_limiter.waiting == 0)
