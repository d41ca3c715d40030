"""torchvision weights through the real path — hub cache, hash check, download with progress — offline:
the 'remote' is an HTTP server on 127.0.0.1 serving a state dict we make."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from models import registry
from models.registry import HubWeights, WeightsError
from server.main import create_app
from server.settings import Settings


@pytest.fixture
def hub_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub" / "checkpoints"


def _trained_like(entry: registry.ModelEntry) -> bytes:
    model = entry.build_untrained()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(-1.0)  # different from the untrained init, so the test can tell which was loaded
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


@pytest.fixture
def weights_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "remote"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):  # type: ignore[no-untyped-def]
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def _publish(root: Path, base_url: str, payload: bytes, stem: str = "squeezenet1_1") -> HubWeights:
    name = f"{stem}-{hashlib.sha256(payload).hexdigest()[:8]}.pth"
    (root / name).write_bytes(payload)
    return HubWeights(f"{base_url}/{name}")


def test_download_verifies_and_lands_in_the_hub_cache(hub_dir: Path, weights_server) -> None:
    base_url, root = weights_server
    payload = _trained_like(registry.get_entry("squeezenet1_1"))
    source = _publish(root, base_url, payload)
    assert source.status().state == "downloadable"
    seen: list[tuple[int, int | None]] = []
    path = source.download(lambda done, total: seen.append((done, total)))
    assert path == hub_dir / source.filename and path.read_bytes() == payload
    assert seen[-1] == (len(payload), len(payload))
    assert source.status().state == "cached"
    assert set(source.load_state_dict()) == set(registry.get_entry("squeezenet1_1").build_untrained().state_dict())


def test_corrupt_download_is_refused_and_leaves_nothing(hub_dir: Path, weights_server) -> None:
    base_url, root = weights_server
    payload = _trained_like(registry.get_entry("squeezenet1_1"))
    source = _publish(root, base_url, payload)
    (root / source.filename).write_bytes(payload[:-100])  # truncated on the "server"
    with pytest.raises(WeightsError, match="hash check"):
        source.download()
    assert not hub_dir.exists() or not any(hub_dir.iterdir())


def test_unreachable_server_is_a_clear_error(hub_dir: Path) -> None:
    with pytest.raises(WeightsError, match="downloading"):
        HubWeights("http://127.0.0.1:9/squeezenet1_1-deadbeef.pth").download(timeout=2)


def test_corrupt_cached_file_is_reported(hub_dir: Path) -> None:
    source = HubWeights("http://127.0.0.1:9/squeezenet1_1-deadbeef.pth")
    hub_dir.mkdir(parents=True)
    source.cached_path.write_bytes(b"not a checkpoint")
    assert source.status().state == "cached"
    with pytest.raises(WeightsError, match="hash check"):
        source.load_state_dict()


def test_download_through_the_api_switches_the_model_to_trained(
    hub_dir: Path, weights_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base_url, root = weights_server
    entry = registry.get_entry("squeezenet1_1")
    payload = _trained_like(entry)
    patched = dataclasses.replace(entry, weights=_publish(root, base_url, payload))
    table = registry.default_registry().copy()
    table.register(patched, replace=True)

    with TestClient(create_app(Settings(storage_dir=tmp_path / "images"), registry=table)) as client:
        assert client.get("/api/models/squeezenet1_1").json()["weights_used"] == "untrained"
        assert client.get("/api/models/squeezenet1_1/weights/download").status_code == 404
        started = client.post("/api/models/squeezenet1_1/weights/download")
        assert started.status_code == 202
        for _ in range(200):
            job = client.get("/api/models/squeezenet1_1/weights/download").json()
            if job["state"] != "running":
                break
            time.sleep(0.05)
        assert job["state"] == "done" and job["downloaded"] == len(payload), job
        detail = client.get("/api/models/squeezenet1_1").json()
        assert detail["weights"]["state"] == "cached" and detail["weights_used"] == "trained"
        served = client.get("/api/models/squeezenet1_1/layers/features.0/weights.npy")
        assert served.headers["x-convscope-weights"] == "trained"
        expected = -entry.build_untrained().features[0].weight.detach().numpy()
        import numpy as np

        np.testing.assert_array_equal(np.load(io.BytesIO(served.content)), expected)
        bundled = client.post("/api/models/lenet5/weights/download")
        assert bundled.status_code == 409 and bundled.json()["error"]["code"] == "not_downloadable"
