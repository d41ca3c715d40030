"""Feature visualisation: seeded, raises the channel it optimises, cancellable, hooks released; the API job."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from server.main import create_app
from server.services.channels import feature_vis as fv
from server.services.runtime.model_runtime import ModelRuntime
from server.services.work.background_jobs import BackgroundJobs
from server.services.work.cancel import WorkCancelled
from server.settings import Settings
from tests.harness import wait_until


@pytest.fixture(scope="module")
def lenet():
    return ModelRuntime(torch.device("cpu")).load("lenet5", "auto")


def _channel_mean(loaded, picture: np.ndarray, upto: int, channel: int) -> float:
    mean, std = loaded.preprocess_fn.mean[0], loaded.preprocess_fn.std[0]
    x = (torch.from_numpy(picture).permute(2, 0, 1)[None].float() - mean) / std
    with torch.no_grad():
        return float(loaded.module.features[: upto + 1](x)[0, channel].mean())


def test_seeded_and_raises_the_channel(lenet):
    a, value_a = fv.optimise(lenet, lenet.named_layer("features.3"), 2, steps=24, seed=7)
    b, value_b = fv.optimise(lenet, lenet.named_layer("features.3"), 2, steps=24, seed=7)
    c, _ = fv.optimise(lenet, lenet.named_layer("features.3"), 2, steps=24, seed=8)
    assert a.shape == (28, 28, 1) and 0.0 <= a.min() and a.max() <= 1.0
    np.testing.assert_array_equal(a, b)
    assert value_a == value_b
    assert np.abs(a - c).max() > 0.05
    # the value reported is the channel's mean on the returned picture, computed here by plain PyTorch
    assert value_a == pytest.approx(_channel_mean(lenet, a, 3, 2), abs=1e-4)
    # and optimisation raised it well above a flat grey picture and the starting noise
    grey = np.full((28, 28, 1), 0.5, dtype=np.float32)
    start, _ = fv.optimise(lenet, lenet.named_layer("features.3"), 2, steps=0, seed=7)
    assert value_a > _channel_mean(lenet, grey, 3, 2) + 0.5
    assert value_a > _channel_mean(lenet, start, 3, 2) + 0.5
    # no hook outlives the runs
    for module in lenet.module.modules():
        assert not module._forward_hooks


def test_progress_and_cancel_between_steps(lenet):
    steps = []

    def progress(step: int, _value: float) -> None:
        steps.append(step)
        if step == 3:
            raise WorkCancelled()

    with pytest.raises(WorkCancelled):
        fv.optimise(lenet, lenet.named_layer("features.0"), 1, steps=50, seed=0, progress=progress)
    assert steps == [1, 2, 3]
    for module in lenet.module.modules():
        assert not module._forward_hooks


def test_colour_mixing_is_a_normalised_square_root():
    mix = np.array(fv.measure_colour_mixing("shapes", None))
    assert mix.shape == (3, 3)
    np.testing.assert_allclose(mix, mix.T, atol=1e-9)  # the symmetric square root
    assert np.linalg.norm(mix, axis=0).max() == pytest.approx(1.0)


def test_background_jobs_cancel_bound_and_close():
    jobs = BackgroundJobs(max_queue=1)
    release = threading.Event()

    def slow(job):
        for i in range(1000):
            job.progress(i, 1000)
            if release.wait(0.01):
                return

    first = jobs.submit("a", slow)
    wait_until(lambda: first.state == "running", timeout=30, what="the first job to start")
    queued = jobs.submit("b", slow)
    assert jobs.submit("b", slow) is queued  # the same key is the same job
    with pytest.raises(Exception) as refused:
        jobs.submit("c", slow)
    assert refused.value.status == 429 and "Retry-After" in refused.value.headers
    jobs.cancel("b")
    assert queued.state == "cancelled"
    jobs.cancel("a")
    wait_until(lambda: first.state != "running", timeout=10, what="the cancelled job to stop")
    assert first.state == "cancelled"
    jobs.close()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("fv")
    settings = Settings(storage_dir=tmp / "images", channel_cache_dir=tmp / "channels", feature_vis_steps=16)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_api_job_runs_caches_and_serves_the_picture(client, lenet):
    url = "/api/models/lenet5/layers/features.3/channels/2/feature-vis"
    assert client.get(f"{url}.json", params={"seed": 3}).json()["state"] == "missing"
    assert client.get(f"{url}.png", params={"seed": 3}).status_code == 404
    started = client.post(url, params={"seed": 3})
    assert started.status_code == 202 and started.json()["state"] in ("queued", "running", "done")
    deadline = time.monotonic() + 120
    while (status := client.get(f"{url}.json", params={"seed": 3}).json())["state"] != "done":
        assert status["state"] in ("queued", "running"), status
        assert 0 <= status["progress"]["done"] <= status["progress"]["total"] == 16
        assert time.monotonic() < deadline
        time.sleep(0.1)
    picture = Image.open(io.BytesIO(client.get(f"{url}.png", params={"seed": 3}).content))
    assert picture.size == (28, 28) and picture.mode == "L"
    expected, value = fv.optimise(lenet, lenet.named_layer("features.3"), 2, steps=16, seed=3)
    assert status["objective"] == pytest.approx(value, abs=1e-4)
    assert np.abs(np.asarray(picture, dtype=np.int16) - np.round(expected[..., 0] * 255)).max() <= 1
    again = client.post(url, params={"seed": 3})  # cached: answered at once
    assert again.status_code == 200 and again.json()["state"] == "done"


@pytest.mark.parametrize(("path", "params", "status"), [
    ("layers/features.3/channels/16/feature-vis.json", {}, 404),
    ("layers/features.3/channels/0/feature-vis.json", {"seed": -1}, 422),
    ("layers/features.3/channels/0/feature-vis.json", {"seed": 10_000}, 422),
    ("layers/nope/channels/0/feature-vis.json", {}, 404),
])
def test_bad_requests(client, path, params, status):
    answer = client.get(f"/api/models/lenet5/{path}", params=params)
    assert answer.status_code == status
    assert set(answer.json()["error"]) == {"code", "message"}


def test_cache_dir_is_bounded(tmp_path: Path, lenet):
    service = fv.FeatureVisualisations(BackgroundJobs(2), tmp_path, None, steps=1, cache_bytes=1, admit=None)
    for name in ("featurevis-a", "featurevis-b"):
        (tmp_path / f"{name}.png").write_bytes(b"x" * 100)
        (tmp_path / f"{name}.json").write_text("{}")
    service._evict(keep=tmp_path / "featurevis-b.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["featurevis-b.json", "featurevis-b.png"]


def test_api_cancel_stops_a_running_job(tmp_path: Path):
    settings = Settings(storage_dir=tmp_path / "images", channel_cache_dir=tmp_path / "channels",
                        feature_vis_steps=1_000_000)  # would run for hours unless cancelled
    app = create_app(settings)
    with TestClient(app) as client:
        url = "/api/models/lenet5/layers/features.0/channels/1/feature-vis"
        assert client.post(url).status_code == 202
        deadline = time.monotonic() + 60
        while client.get(f"{url}.json").json()["progress"]["done"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.delete(url).status_code == 200
        while (state := client.get(f"{url}.json").json()["state"]) == "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert state == "cancelled"
        assert client.get(f"{url}.png").status_code == 404
        # asking again starts over (a cancelled run is not a result)
        assert client.post(url).json()["state"] in ("queued", "running")
    # leaving the app's lifespan cancelled that one too and stopped the worker
    worker = app.state.background_jobs._thread
    assert worker is not None and not worker.is_alive()
