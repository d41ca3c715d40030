"""WS /api/models/{model}/live: the protocol driven by a Python client (Starlette's test client).

Answers are checked against the HTTP path for the same image bytes (predictions, the layer's atlas,
the Grad-CAM overlay); latest frame wins; bad frames and bad queries; disconnects free everything.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from models.datasets import shapes
from server.main import create_app
from server.services.live.frame import saliency_overlay
from server.services.rendering import atlas
from server.services.runtime.inputs import input_picture
from server.settings import Settings
from tests.conftest import load_npy, png_bytes
from tests.harness import assert_no_hooks, wait_until


def _jpeg(image: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _data(url: str) -> bytes:
    head, _, payload = url.partition(",")
    assert head.startswith("data:image/") and head.endswith(";base64"), head
    return base64.b64decode(payload)


def _picture(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(_data(url))))


@pytest.fixture(scope="module")
def photo(shared_data: Path) -> bytes:
    image = Image.open(shared_data / "images" / "zebra.jpg")
    image.thumbnail((640, 640))
    return _jpeg(image)


@pytest.fixture(scope="module")
def shape_png() -> bytes:
    picture, _, _ = shapes.sample(11, "test")
    return png_bytes(np.asarray(picture))


def _make_client(tmp_path: Path, **overrides: object) -> TestClient:
    return TestClient(create_app(Settings(storage_dir=tmp_path / "images", **overrides)))


@pytest.fixture
def live_client(tmp_path: Path) -> Iterator[TestClient]:
    with _make_client(tmp_path) as client:
        yield client


def _answer(ws) -> dict:
    """The next per-frame message (frame answers and frame errors both carry "frame")."""
    message = ws.receive_json()
    assert "frame" in message, message
    return message


@pytest.mark.parametrize(("model", "query"), [("lenet5", ""), ("tinyvgg-shapes", "&method=gradcam")])
def test_predictions_equal_the_http_path_for_the_same_bytes(live_client: TestClient, upload, photo: bytes,
                                                            model: str, query: str) -> None:
    image_id = upload(live_client, photo, "zebra.jpg")
    http = live_client.get(f"/api/models/{model}/images/{image_id}/predictions").json()["predictions"]
    with live_client.websocket_connect(f"/api/models/{model}/live?weights=auto{query}") as ws:
        ready = ws.receive_json()["ready"]
        assert ready["model"] == model and ready["top_k"] == 5
        ws.send_bytes(photo)
        answer = _answer(ws)
    assert answer["frame"] == 1 and answer["dropped"] == 0
    assert [p["index"] for p in answer["predictions"]] == [p["index"] for p in http]
    assert [p["label"] for p in answer["predictions"]] == [p["label"] for p in http]
    np.testing.assert_allclose([p["probability"] for p in answer["predictions"]],
                               [p["probability"] for p in http], rtol=1e-5, atol=1e-7)
    assert answer["weights_used"] == "trained"
    assert set(answer["timing"]) == {"queue_ms", "decode_ms", "model_ms", "encode_ms", "server_ms"}


def test_layer_atlas_is_the_http_activations_coloured(live_client: TestClient, upload, photo: bytes) -> None:
    layer = "features.1"  # lenet5's first ReLU: 6×28×28
    image_id = upload(live_client, photo)
    activations = load_npy(live_client.get(
        f"/api/models/lenet5/images/{image_id}/layers/{layer}/activations.npy").content)
    atlas_json = live_client.get(f"/api/models/lenet5/images/{image_id}/layers/{layer}/atlas.json").json()
    with live_client.websocket_connect(f"/api/models/lenet5/live?layer={layer}") as ws:
        assert ws.receive_json()["ready"]["layer_shape"] == [6, 28, 28]
        ws.send_bytes(photo)
        answer = _answer(ws)["layer"]
    assert answer["name"] == layer and answer["shape"] == [6, 28, 28] and answer["downsampled"] == 1
    for key in ("grid", "tile", "colormap", "data_range", "stops"):
        assert answer[key] == atlas_json[key], key
    np.testing.assert_allclose(answer["tiles"]["low"], atlas_json["tiles"]["low"], rtol=1e-6)
    np.testing.assert_allclose(answer["tiles"]["high"], atlas_json["tiles"]["high"], rtol=1e-6)
    # the PNG's palette indices are exactly the HTTP activations through the atlas colouring
    spec = atlas.layout(activations, "layer", "auto")
    got = np.asarray(Image.open(io.BytesIO(_data(answer["atlas"]))))
    np.testing.assert_array_equal(got, atlas.atlas_indices(activations, spec))


def test_large_layers_are_averaged_down_with_the_true_legend(tmp_path: Path, photo: bytes) -> None:
    with _make_client(tmp_path, live_atlas_max_pixels=1000) as client:
        with client.websocket_connect("/api/models/lenet5/live?layer=features.1") as ws:
            ws.receive_json()
            ws.send_bytes(photo)
            answer = _answer(ws)["layer"]
        image_id = client.post("/api/images", files={"file": ("z.jpg", photo)}).json()["image_id"]
        full = load_npy(client.get(f"/api/models/lenet5/images/{image_id}/layers/features.1/activations.npy").content)
    factor = answer["downsampled"]
    assert factor == 3  # ceil(sqrt(6·28·28 / 1000))
    assert answer["tile"] == {"height": 10, "width": 10} and answer["channel_shape"] == [28, 28]
    assert answer["data_range"] == pytest.approx([float(full.min()), float(full.max())], rel=1e-6)
    got = Image.open(io.BytesIO(_data(answer["atlas"])))
    assert got.size == (answer["image"]["width"], answer["image"]["height"])
    assert got.width * got.height <= 1000


def test_gradcam_overlay_equals_the_http_saliency_map(live_client: TestClient, upload, shape_png: bytes) -> None:
    model = "tinyvgg-shapes"
    image_id = upload(live_client, shape_png)
    base = f"/api/models/{model}/images/{image_id}"
    sal = live_client.get(f"{base}/saliency.json?method=gradcam").json()
    values = load_npy(live_client.get(f"{base}/saliency.npy?method=gradcam").content)
    with live_client.websocket_connect(f"/api/models/{model}/live?method=gradcam") as ws:
        assert ws.receive_json()["ready"]["saliency_layer"] == sal["layer"]
        ws.send_bytes(shape_png)
        answer = _answer(ws)
    live = answer["saliency"]
    assert (live["method"], live["layer"], live["target"]) == ("gradcam", sal["layer"], sal["map"]["index"])
    assert live["target"] == answer["predictions"][0]["index"]
    assert live["raw_range"] == pytest.approx([sal["map"]["low"], sal["map"]["high"]], rel=1e-5, abs=1e-7)
    loaded = live_client.app.state.runtime.load(model)
    tensor = load_npy(live_client.get(f"{base}/input.npy").content)
    import torch

    expected = np.asarray(saliency_overlay(values, input_picture(loaded, torch.from_numpy(tensor))))
    got = _picture(live["overlay"])  # 64×64: lossless PNG
    assert got.shape == expected.shape == (64, 64, 3)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    assert _picture(answer["input"]).shape == (64, 64, 3)


def test_latest_frame_wins(live_client: TestClient, photo: bytes) -> None:
    limiter = live_client.app.state.limiter
    hub = live_client.app.state.live
    with live_client.websocket_connect("/api/models/lenet5/live") as ws:
        ws.receive_json()
        (session,) = hub.sessions()
        with ExitStack() as busy:  # every work slot taken: frames wait for the model
            for quick in (False,) * limiter.max_active + (True,) * limiter.express:  # every slot, express ones too
                busy.enter_context(limiter.admit(quick=quick))
            ws.send_bytes(photo)
            wait_until(lambda: limiter.waiting == 1, what="frame 1 waits for the model")
            ws.send_bytes(photo)
            wait_until(lambda: session.stats.decoded == 2, what="frame 2 is decoded (and waits for the model)")
            for _ in range(8):
                ws.send_bytes(photo)
            wait_until(lambda: session.stats.received == 10, what="all frames arrived")
            assert session.slot.waiting  # frame 10 waits; 3..9 were replaced, never queued
            assert session.stats.decoded == 2
        answers = [_answer(ws) for _ in range(3)]
    assert [(a["frame"], a["dropped"]) for a in answers] == [(1, 0), (2, 0), (10, 7)]
    assert all("predictions" in a for a in answers)
    assert session.stats.dropped == 7


def test_bad_frames_get_errors_and_the_socket_stays_usable(tmp_path: Path, photo: bytes) -> None:
    big = np.random.default_rng(0).integers(0, 255, (120, 120, 3), dtype=np.uint8)
    with _make_client(tmp_path, max_live_frame_bytes=len(photo) + 10, max_live_frame_pixels=100 * 100) as client:
        with client.websocket_connect("/api/models/tinyvgg-shapes/live") as ws:
            ws.receive_json()
            small = _jpeg(Image.open(io.BytesIO(photo)).resize((80, 60)))
            cases = [
                (b"this is not an image", 415, "unsupported_media_type"),
                (b"", 400, "empty_file"),
                (small[: len(small) // 3], 422, "corrupt_image"),
                (photo + b"\0" * 100, 413, "frame_too_large"),
                (png_bytes(big), 413, "image_too_large"),
            ]
            for number, (frame, status, code) in enumerate(cases, start=1):
                ws.send_bytes(frame)
                error = _answer(ws)
                assert error["frame"] == number
                assert error["error"]["status"] == status and error["error"]["code"] == code, error
                assert error["error"]["message"]
            ws.send_text("hello")
            assert ws.receive_json()["error"]["code"] == "binary_frames_expected"
            ws.send_bytes(small)
            answer = _answer(ws)
            assert answer["frame"] == len(cases) + 1 and len(answer["predictions"]) == 5


@pytest.mark.parametrize(("query", "status", "code"), [
    ("nope/live", 404, "unknown_model"),
    ("lenet5/live?layer=nope", 404, "unknown_layer"),
    ("lenet5/live?weights=sideways", 422, "invalid_weights"),
    ("lenet5/live?method=occlusion", 422, "method_not_live"),
    ("lenet5/live?method=bogus", 422, "unknown_method"),
    ("lenet5/live?method=gradcam&saliency_layer=classifier.4", 422, "layer_not_spatial"),
])
def test_a_bad_query_is_answered_and_closed(live_client: TestClient, query: str, status: int, code: str) -> None:
    with live_client.websocket_connect(f"/api/models/{query}") as ws:
        error = ws.receive_json()["error"]
        assert (error["status"], error["code"]) == (status, code)
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1008


def test_more_live_clients_than_allowed_are_told_to_come_back(tmp_path: Path) -> None:
    with _make_client(tmp_path, max_live_clients=1) as client:
        with client.websocket_connect("/api/models/lenet5/live") as first:
            assert "ready" in first.receive_json()
            with client.websocket_connect("/api/models/lenet5/live") as second:
                error = second.receive_json()["error"]
                assert error["code"] == "too_many_live_clients" and error["retry_after_s"] > 0
                with pytest.raises(WebSocketDisconnect) as closed:
                    second.receive_json()
                assert closed.value.code == 1013
        assert client.app.state.live.refused == 1


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://testserver.evil.example",
                                    "http://testserver:8080", "file://"])
def test_a_page_from_another_origin_is_refused(live_client: TestClient, origin: str) -> None:
    """The HTTP origin rule (security.OriginCheckMiddleware) guards the handshake: the refusal is the
    API's JSON error, as the handshake's HTTP answer."""
    with pytest.raises(WebSocketDenialResponse) as refused:
        with live_client.websocket_connect("/api/models/lenet5/live", headers={"origin": origin}):
            pass
    assert refused.value.status_code == 403 and refused.value.json()["error"]["code"] == "foreign_origin"
    assert live_client.app.state.live.active == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("origin", ["http://testserver", "HTTP://TESTSERVER/", None])
def test_the_page_itself_and_scripts_may_connect(live_client: TestClient, origin: str | None) -> None:
    headers = {"origin": origin} if origin else {}
    with live_client.websocket_connect("/api/models/lenet5/live", headers=headers) as ws:
        assert "ready" in ws.receive_json()


def test_a_cors_origin_may_connect(tmp_path: Path) -> None:
    with _make_client(tmp_path, cors_origins=["https://class.example"]) as client:
        with client.websocket_connect("/api/models/lenet5/live", headers={"origin": "https://class.example"}) as ws:
            assert "ready" in ws.receive_json()


def test_an_idle_socket_is_closed(tmp_path: Path) -> None:
    with _make_client(tmp_path, live_idle_timeout_s=0.2) as client:
        with client.websocket_connect("/api/models/lenet5/live") as ws:
            ws.receive_json()
            assert ws.receive_json()["error"]["code"] == "idle_timeout"
            with pytest.raises(WebSocketDisconnect):
                ws.receive_json()
        wait_until(lambda: client.app.state.live.active == 0, what="the session is gone")


@pytest.mark.parametrize("query", ["", "?method=gradcam"])
def test_disconnect_frees_everything(live_client: TestClient, photo: bytes, query: str) -> None:
    hub = live_client.app.state.live
    limiter = live_client.app.state.limiter
    with live_client.websocket_connect(f"/api/models/tinyvgg-shapes/live{query}") as ws:
        ws.receive_json()
        ws.send_bytes(photo)
        _answer(ws)
        (session,) = hub.sessions()
        for _ in range(5):  # leave with frames computing and waiting
            ws.send_bytes(photo)
        wait_until(lambda: session.stats.received == 6, what="the frames arrived")
    wait_until(lambda: hub.active == 0, what="the session is unregistered")  # after its worker task has ended
    assert not session.stats.computing and limiter.active == 0 and limiter.waiting == 0
    assert_no_hooks(live_client.app.state.runtime.load("tinyvgg-shapes").module)
    # the server carries on
    with live_client.websocket_connect(f"/api/models/tinyvgg-shapes/live{query}") as ws:
        ws.receive_json()
        ws.send_bytes(photo)
        assert len(_answer(ws)["predictions"]) == 5


def test_a_frame_waiting_for_the_model_is_abandoned_on_disconnect(live_client: TestClient, photo: bytes) -> None:
    limiter = live_client.app.state.limiter
    hub = live_client.app.state.live
    with ExitStack() as busy:  # every work slot stays taken until the end of the test
        for quick in (False,) * limiter.max_active + (True,) * limiter.express:  # every slot, express ones too
            busy.enter_context(limiter.admit(quick=quick))
        with live_client.websocket_connect("/api/models/lenet5/live") as ws:
            ws.receive_json()
            ws.send_bytes(photo)
            wait_until(lambda: limiter.waiting == 1, what="the frame waits for a slot")
        # the session ends although no slot was ever free: its waiting frame gave up
        wait_until(lambda: hub.active == 0 and limiter.waiting == 0, what="the session and its wait are gone")


@pytest.mark.parametrize(("model", "fill"), [("tinyvgg-shapes", "noise"), ("efficientnet_lite0", "blur")])
def test_a_patch_covers_every_frame_as_the_occlusion_probe_covers_the_upload(live_client: TestClient, upload, photo: bytes,
                                                                          model: str, fill: str) -> None:
    """Issue 22 §2: the occlusion patch over the live image. The answer for a patched frame equals the
    probe's answer for the same bytes uploaded with the same patch; the picture shows the patch; a patch
    too large or of an unknown fill is a 422 naming the field and leaves the stream (and the patch) going."""
    image_id = upload(live_client, photo, "zebra.jpg")
    patch = {"y": -3, "x": 10, "size": 12, "fill": fill}
    probe = live_client.post(f"/api/models/{model}/images/{image_id}/occlusion-probe", json={"patches": [patch]})
    assert probe.status_code == 200, probe.text
    expected = probe.json()["results"][0]["predictions"]
    with live_client.websocket_connect(f"/api/models/{model}/live") as ws:
        side = ws.receive_json()["ready"]["input"]["height"]
        ws.send_text(json.dumps({"patch": {"y": 0, "x": 0, "size": side + 1, "fill": "grey"}}))
        error = ws.receive_json()["error"]
        assert error["status"] == 422 and error["message"].startswith("patch.size"), error
        ws.send_text('{"patch": {"y": 0, "x": 0, "size": 4, "fill": "paint"}}')
        assert ws.receive_json()["error"]["message"].startswith("patch.fill")
        ws.send_text(json.dumps({"patch": patch}))
        ws.send_bytes(photo)
        answer = _answer(ws)
        assert answer["patch"] == {"y": 0, "x": 10, "height": 9, "width": 12, "fill": fill}
        got = {p["index"]: p["probability"] for p in answer["predictions"]}
        for row in expected:
            assert got[row["index"]] == pytest.approx(row["probability"], abs=1e-5)
        covered = _picture(answer["input"])
        assert covered.shape[:2] == (side, side)
        ws.send_text('{"patch": null}')
        ws.send_bytes(photo)
        clean = _answer(ws)
        assert "patch" not in clean
        plain = live_client.get(f"/api/models/{model}/images/{image_id}/predictions", params={"top_k": 5}).json()
        assert [p["index"] for p in clean["predictions"]] == [p["index"] for p in plain["predictions"]]
