"""Faults: broken or missing weights files, a simulated CUDA out-of-memory, clients that hang up. The model
at fault is marked ``unavailable`` with the reason, everything else keeps serving, and nothing leaks.

Weights files here are temporary copies made by the test (the committed ones are never touched)."""

from __future__ import annotations

import dataclasses
import pickle
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient

from models import registry
from models.registry import BundledWeights, ModelEntry
from server.main import create_app
from server.settings import Settings
from tests.conftest import png_bytes
from tests.harness import assert_no_hooks, serving

BUNDLED = ("lenet5", "mnist-shallow", "mnist-deep", "tinyvgg-shapes")


class CodeOnLoad:
    """A pickle that would create a file when unpickled: what ``weights_only=True`` must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def write_weights(kind: str, path: Path, entry: ModelEntry, other: ModelEntry, marker: Path) -> None:
    good = entry.build_untrained().state_dict()
    if kind == "good":
        torch.save(good, path)
    elif kind == "garbage":
        path.write_bytes(b"these are not the weights you are looking for" * 10)
    elif kind == "truncated":
        torch.save(good, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "wrong_architecture":
        torch.save(other.build_untrained().state_dict(), path)
    elif kind == "code_on_load":
        with path.open("wb") as fh:
            pickle.dump({"weight": CodeOnLoad(marker)}, fh)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind != "missing":
        raise ValueError(kind)


@pytest.fixture
def weights_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, str]], Path]:
    """Point the bundled models at temporary weights files of the given kinds (good, garbage, missing…)."""

    registries: list[registry.ModelRegistry] = []  # the apps below serve the last one made

    def make(kinds: dict[str, str]) -> Path:
        folder = tmp_path / "weights"
        folder.mkdir(exist_ok=True)
        originals = {e.id: e for e in registry.list_models()}
        patched = registry.default_registry().copy()
        for model_id, kind in kinds.items():
            entry = originals[model_id]
            path = folder / f"{model_id}.pt"
            other = originals["tinyvgg-shapes" if model_id != "tinyvgg-shapes" else "lenet5"]
            write_weights(kind, path, entry, other, tmp_path / "pwned")
            weights = BundledWeights(path, folder / f"{model_id}.metrics.json")
            patched.register(dataclasses.replace(entry, weights=weights), replace=True)
        registries.append(patched)
        return tmp_path

    make.registries = registries  # type: ignore[attr-defined]
    return make


def states(client: TestClient) -> dict[str, dict[str, str]]:
    return {m["id"]: m["weights"] for m in client.get("/api/models").json()["models"]}


@pytest.mark.parametrize("kind", ["garbage", "truncated", "wrong_architecture", "code_on_load", "empty", "missing"])
def test_broken_weights_mark_only_that_model_unavailable(weights_dir, tmp_path: Path, kind: str, upload) -> None:
    root = weights_dir({"lenet5": "good", "mnist-shallow": kind, "mnist-deep": "good", "tinyvgg-shapes": "good"})
    app = create_app(Settings(storage_dir=tmp_path / "images"), registry=weights_dir.registries[-1])
    with TestClient(app) as client:
        image_id = upload(client, png_bytes(np.full((28, 28), 50, dtype=np.uint8)))
        # Whatever the damage, the model is still usable untrained (clearly labelled), or trained on request: 409.
        auto = client.get(f"/api/models/mnist-shallow/images/{image_id}/predictions")
        assert auto.status_code == 200, auto.text
        assert auto.headers["x-convscope-weights"] == "untrained"
        trained = client.get(f"/api/models/mnist-shallow/images/{image_id}/predictions?weights=trained")
        assert trained.status_code == 409 and trained.json()["error"]["code"] == "weights_unavailable"
        status = states(client)["mnist-shallow"]
        assert status["state"] == "unavailable", status
        assert "mnist-shallow.pt" in status["detail"] or "mnist-shallow" in status["detail"], status
        # The others keep serving with their trained weights.
        for other in ("lenet5", "mnist-deep"):
            assert states(client)[other]["state"] == "bundled"
            response = client.get(f"/api/models/{other}/images/{image_id}/predictions")
            assert response.status_code == 200 and response.headers["x-convscope-weights"] == "trained"
        assert client.get("/api/models/mnist-shallow").status_code == 200
    assert not (root / "pwned").exists()  # the pickle's code never ran: weights_only=True refused it


def test_unreadable_weights_are_reported_before_first_use(weights_dir, tmp_path: Path) -> None:
    weights_dir({"lenet5": "garbage", "mnist-deep": "missing", "mnist-shallow": "good"})
    app = create_app(Settings(storage_dir=tmp_path / "images"), registry=weights_dir.registries[-1])
    with TestClient(app) as client:
        found = states(client)
    assert found["lenet5"]["state"] == "unavailable" and "could not be read" in found["lenet5"]["detail"]
    assert found["mnist-deep"]["state"] == "unavailable" and "missing" in found["mnist-deep"]["detail"]
    assert found["mnist-shallow"]["state"] == "bundled"


def test_every_torch_load_in_the_project_is_weights_only() -> None:
    root = Path(__file__).resolve().parent.parent
    calls = []
    for folder in ("server", "models", "bench"):
        for path in (root / folder).rglob("*.py"):
            text = path.read_text()
            start = 0
            while (at := text.find("torch.load(", start)) >= 0:
                end = text.find(")", at)
                calls.append((path.name, text[at:end + 1]))
                start = at + 1
    assert calls, "the weights loader should be found"
    unsafe = [c for c in calls if "weights_only=True" not in c[1]]
    assert not unsafe, unsafe


# --- simulated out-of-memory ----------------------------------------------------------------------------

def test_cuda_out_of_memory_gives_503_and_the_server_recovers(client: TestClient, upload,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    image_id = upload(client, png_bytes(np.full((28, 28), 70, dtype=np.uint8)))
    base = f"/api/models/lenet5/images/{image_id}"
    urls = [f"{base}/predictions", f"{base}/layers/features.0/activations.npy",
            f"{base}/saliency.npy?method=gradcam&layer=features.3"]
    for url in urls:
        assert client.get(url).status_code == 200, (url, client.get(url).text)
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    loaded = runtime.load("lenet5")
    first = next(m for m in loaded.module.modules() if isinstance(m, torch.nn.Conv2d))

    def out_of_memory(*_args, **_kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")

    # A fresh image, so that no cached activation answers without a forward pass.
    fresh = upload(client, png_bytes(np.full((28, 28), 140, dtype=np.uint8)))
    fresh_urls = [u.replace(image_id, fresh) for u in urls]
    monkeypatch.setattr(first, "forward", out_of_memory)
    for url in fresh_urls:
        response = client.get(url)
        assert response.status_code == 503, (url, response.status_code, response.text[:200])
        assert response.json()["error"]["code"] == "out_of_memory"
        assert response.headers["retry-after"].isdigit()
    monkeypatch.undo()
    for url in fresh_urls:
        assert client.get(url).status_code == 200, url
    assert_nothing_left(client.app)


# --- clients that hang up -------------------------------------------------------------------------------

def assert_nothing_left(app: FastAPI) -> None:
    """No limiter slot held, no batch open, no hook on any loaded model, no temporary file in the store."""
    state = app.state
    deadline = time.monotonic() + 60
    while (state.limiter.active or state.limiter.waiting or state.heavy_limiter.active or state.heavy_limiter.waiting
           or state.batcher.pending()):
        assert time.monotonic() < deadline, "work never finished"
        time.sleep(0.01)
    for loaded in state.runtime.cache.values():
        assert_no_hooks(loaded.module)
        for param in loaded.module.parameters():
            assert not param.requires_grad and param.grad is None
    leftovers = [p.name for p in state.image_store.root.iterdir() if not p.name.endswith(".png")]
    assert leftovers == []


@pytest.fixture
def live_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FastAPI, int, Path]]:
    """A real uvicorn with one compute slot, and a private temp folder to see what it leaves behind."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    app = create_app(Settings(storage_dir=tmp_path / "images", max_active_work=1))
    with serving(app) as port:
        yield app, port, scratch


def hang_up_after(port: int, raw: bytes, wait: float = 0.0) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(raw)
        if wait:
            time.sleep(wait)
    # closed without reading the answer


def test_clients_that_disconnect_leave_nothing_behind(live_server) -> None:
    import httpx

    app, port, scratch = live_server
    base = f"http://127.0.0.1:{port}"
    png = png_bytes(np.full((28, 28), 200, dtype=np.uint8))
    image_id = httpx.post(f"{base}/api/images", files={"file": ("a.png", png, "image/png")}).json()["image_id"]
    paths = [f"/api/models/lenet5/images/{image_id}/predictions",
             f"/api/models/tinyvgg-shapes/images/{image_id}/layers/block1.0/activations.npy",
             f"/api/models/lenet5/images/{image_id}/saliency.npy?method=gradcam",
             f"/api/models/resnet18/images/{image_id}/predictions"]
    for _ in range(3):
        for path in paths:
            hang_up_after(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        # An upload cut off half-way (announced 1 MB, sent 8 KB), then one cut off inside the multipart headers.
        head = (b"POST /api/images HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                b"Content-Length: 1000000\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; "
                b"filename=\"x.png\"\r\n\r\n" + png[:20])
        hang_up_after(port, head + bytes(8192), wait=0.05)
        hang_up_after(port, b"POST /api/images HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n400\r\n" + bytes(100), wait=0.05)
    assert_nothing_left(app)
    assert list(scratch.iterdir()) == []
    # And the server is still fine.
    for path in paths:
        assert httpx.get(base + path, timeout=60).status_code == 200, path
