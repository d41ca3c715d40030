"""Training runs over the API (issue 24): a short run streams, checkpoints and becomes a model whose checkpoints
work in the views (numbers checked against plain PyTorch); bad knobs get a 4xx naming the knob; limits answer
429 with Retry-After; pause, resume, stop, an owner who leaves and the app's shutdown end the worker process
and leave no process or file behind."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from fastapi.testclient import TestClient

from models.datasets import mnist
from models.preprocessing import MNIST_MEAN, MNIST_STD
from models.training.config import for_architecture
from models.training.networks import build_network
from server.main import create_app
from server.settings import Settings
from tests.conftest import png_bytes
from tests.harness import SHARED_DATA, live_server, wait_until
from tests.training_support import events_until_end, workers

pytestmark = pytest.mark.skipif(not (SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz").is_file(),
                                reason="../shared/data/mnist is not present")
SHORT = {"epochs": 2, "train_size": 128, "batch_size": 32}
LONG = {"epochs": 50, "train_size": 8000, "batch_size": 16}  # minutes of work: only ever stopped


@pytest.fixture
def training_settings(tmp_path: Path) -> Settings:
    return Settings(storage_dir=tmp_path / "images", data_dir=SHARED_DATA, training_dir=tmp_path / "training",
                    training_client_grace_s=30.0)


@pytest.fixture
def app_client(training_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(training_settings)) as test_client:
        yield test_client
    wait_until(lambda: not workers(), 30, "the lifespan's close to end every worker")
    assert not training_settings.training_dir.exists()  # and deleted every checkpoint


def test_a_short_run_streams_and_its_checkpoints_work_in_every_view(app_client, upload):
    started = app_client.post("/api/training/runs", json={**SHORT, "dropout": 0.2, "batch_norm": True,
                                                          "checkpoint_every_steps": 3})
    assert started.status_code == 201, started.text
    run = started.json()
    assert run["model"] == f"run-{run['id']}" and run["config"]["batch_norm"] is True

    events = events_until_end(app_client, run["id"])
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "snapshot" and kinds[-1] == "end" and events[-1][1]["state"] == "done"
    assert kinds.count("epoch") == 2 and kinds.count("checkpoint") == 5 and "point" in kinds
    first = next(data for kind, data in events if kind == "checkpoint")  # epoch-0 comes before any step
    assert (first["weights"], first["epoch"], first["step"]) == ("epoch-0", 0, 0) and kinds.index("checkpoint") < kinds.index("point")
    point = next(data for kind, data in events if kind == "point")
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "images_per_s", "filters", "top5"} <= set(point)
    assert point["filters"]["shape"] == [6, 1, 5, 5] and len(point["top5"]) == 5

    detail = app_client.get(f"/api/training/runs/{run['id']}").json()
    names = [c["weights"] for c in detail["checkpoints"]]  # 4 steps an epoch, and one every 3 steps
    assert detail["state"] == "done" and names == ["epoch-0", "step-3", "epoch-1", "step-6", "epoch-2"]
    assert [row["epoch"] for row in detail["history"]] == [1, 2]
    assert all(0 <= row["val_accuracy"] <= 1 for row in detail["history"])
    models = {m["id"]: m for m in app_client.get("/api/models").json()["models"]}
    assert models[run["model"]]["family"] == "run" and models[run["model"]]["weights"]["state"] == "local"

    # The checkpoint's prediction equals plain PyTorch on the checkpoint file
    images, _labels = mnist.load_mnist_test(SHARED_DATA)
    digit = images[9000]
    image_id = upload(app_client, png_bytes(digit))
    base = f"/api/models/{run['model']}/images/{image_id}"
    answer = app_client.get(f"{base}/predictions", params={"weights": "epoch-1", "top_k": 10})
    assert answer.status_code == 200 and answer.headers["X-ConvScope-Weights"] == "epoch-1"
    config = for_architecture("lenet5", **SHORT, dropout=0.2, batch_norm=True, checkpoint_every_steps=3)
    untrained = torch.load(training_dir(app_client) / f"run-{run['id']}" / "epoch-0.pt", weights_only=True)
    assert all(torch.equal(untrained[k], v) for k, v in build_network(config).state_dict().items())  # the start
    model = build_network(config)
    model.load_state_dict(torch.load(training_dir(app_client) / f"run-{run['id']}" / "epoch-1.pt", weights_only=True))
    with torch.no_grad():
        x = (torch.from_numpy(digit).float()[None, None] / 255 - MNIST_MEAN) / MNIST_STD
        reference = torch.softmax(model.eval()(x)[0], 0).numpy()
    for row in answer.json()["predictions"]:
        assert row["probability"] == pytest.approx(float(reference[row["index"]]), abs=1e-5)
    # the run's held-out accuracy and its filters, against plain PyTorch on the last checkpoint file
    last = build_network(config)
    last.load_state_dict(torch.load(training_dir(app_client) / f"run-{run['id']}" / "epoch-2.pt", weights_only=True))
    held_x, held_y = images[8000:], _labels[8000:]
    with torch.no_grad():
        logits = last.eval()((torch.from_numpy(held_x).float()[:, None] / 255 - MNIST_MEAN) / MNIST_STD)
    assert detail["history"][-1]["val_accuracy"] == pytest.approx(float((logits.argmax(1).numpy() == held_y).mean()))
    snapshot = detail["snapshots"][-1]["filters"]
    weight = last.features[0].weight.detach()
    expected = ((weight - weight.min()) / (weight.max() - weight.min()) * 255).round().to(torch.uint8).numpy()
    shown = np.frombuffer(base64.b64decode(snapshot["data"]), dtype=np.uint8).reshape(snapshot["shape"])
    assert snapshot["min"] == pytest.approx(float(weight.min())) and np.array_equal(shown, expected)
    # the latest checkpoint is what "auto" means; the views take any checkpoint
    assert app_client.get(f"/api/models/{run['model']}").headers["X-ConvScope-Weights"] == "epoch-2"
    layers = app_client.get(f"/api/models/{run['model']}", params={"weights": "epoch-1"}).json()["layers"]
    conv = next(layer["name"] for layer in layers if layer["type"] == "Conv2d")
    for url in (f"{base}/layers/{conv}/activations.npy", f"{base}/layers/{conv}/trace", f"{base}/saliency.png"):
        for weights in ("epoch-2", "step-3", "epoch-0"):
            assert app_client.get(url, params={"weights": weights}).status_code == 200, (url, weights)
    assert app_client.get(f"{base}/predictions", params={"weights": "epoch-9"}).status_code == 404

    renamed = app_client.patch(f"/api/training/runs/{run['id']}", json={"name": "with dropout"})
    assert renamed.json()["name"] == "with dropout"
    assert app_client.get(f"/api/models/{run['model']}").json()["title"] == "with dropout"
    assert app_client.delete(f"/api/training/runs/{run['id']}").status_code == 200
    assert app_client.get(f"/api/models/{run['model']}").status_code == 404
    assert not (training_dir(app_client) / f"run-{run['id']}").exists()


def training_dir(client: TestClient) -> Path:
    return client.app.state.settings.training_dir


@pytest.mark.parametrize(("body", "knob"), [
    ({"epochs": 0}, "epochs"), ({"epochs": 500}, "epochs"), ({"lr": 5}, "lr"), ({"batch_size": 4096}, "batch_size"),
    ({"dropout": 1.5}, "dropout"), ({"train_size": 3}, "train_size"), ({"dataset": "cifar10"}, "dataset"),
    ({"optimizer": "lion"}, "optimizer"), ({"augment": ["flip"]}, "augment"), ({"dataset": "shapes"}, "dataset"),
    ({"architecture": "resnet50"}, "architecture"), ({"schedule": "warm"}, "schedule"), ({"colour": 1}, "colour"),
])
def test_bad_knobs_get_a_4xx_naming_the_knob(module_training_client, body, knob):
    answer = module_training_client.post("/api/training/runs", json=body)
    assert 400 <= answer.status_code < 500, answer.text
    assert knob in answer.json()["error"]["message"]


@pytest.fixture(scope="module")
def module_training_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("training")
    settings = Settings(storage_dir=tmp / "images", data_dir=SHARED_DATA, training_dir=tmp / "training")
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def state_of(client: TestClient, run_id: str) -> str:
    return client.get(f"/api/training/runs/{run_id}").json()["state"]


def until_state(client: TestClient, run_id: str, state: str) -> None:
    wait_until(lambda: state_of(client, run_id) == state, 120, f"run {run_id} {state}", 0.05)


def test_limits_controls_and_cleanup(app_client):
    run = app_client.post("/api/training/runs", json=LONG).json()
    again = app_client.post("/api/training/runs", json=SHORT)
    assert again.status_code == 429 and int(again.headers["Retry-After"]) >= 1
    assert again.json()["error"]["code"] == "run_in_progress"
    until_state(app_client, run["id"], "running")
    [worker] = workers()
    assert app_client.post(f"/api/training/runs/{run['id']}/pause").status_code == 200
    until_state(app_client, run["id"], "paused")
    steps = app_client.get(f"/api/training/runs/{run['id']}").json()["latest"].get("step", 0)
    assert app_client.post(f"/api/training/runs/{run['id']}/resume").status_code == 200
    wait_until(lambda: app_client.get(f"/api/training/runs/{run['id']}").json()["latest"].get("step", 0) > steps, 120,
               "a step after resuming")
    assert app_client.post(f"/api/training/runs/{run['id']}/stop").status_code == 200
    until_state(app_client, run["id"], "stopped")
    wait_until(lambda: not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE, 30)
    assert app_client.post(f"/api/training/runs/{run['id']}/pause").status_code == 409
    # the limit is free again
    second = app_client.post("/api/training/runs", json=LONG)
    assert second.status_code == 201
    until_state(app_client, second.json()["id"], "running")
    # the fixture's exit closes the app while this run trains: no worker, no file may remain


def test_a_run_whose_owner_left_ends(tmp_path):
    settings = Settings(storage_dir=tmp_path / "images", data_dir=SHARED_DATA, training_dir=tmp_path / "training",
                        training_client_grace_s=1.0)
    with TestClient(create_app(settings)) as client:
        run = client.post("/api/training/runs", json=LONG).json()
        # nobody follows it and nobody asks about it: after the grace period the watchdog stops it
        runs = client.app.state.training
        wait_until(lambda: runs.get(run["id"]).state == "stopped", 120, "the watchdog to stop the run")
        wait_until(lambda: not workers(), 30, "the worker to end")


def test_sigterm_to_the_server_ends_its_training_process(tmp_path):
    """A real server (uvicorn) stopped with SIGTERM while a run trains: the worker process ends with it and the
    run's checkpoint folder is gone."""
    import httpx


    training = tmp_path / "training"
    env = {"CONVSCOPE_DATA_DIR": str(SHARED_DATA), "CONVSCOPE_TRAINING_DIR": str(training)}
    with live_server(tmp_path, env=env) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        run = client.post("/api/training/runs", json=LONG).json()
        wait_until(lambda: client.get(f"/api/training/runs/{run['id']}").json()["state"] == "running", 120,
                   "the run to start")
        [worker] = [p for p in psutil.Process(server.pid).children(recursive=True)
                    if "server.services.training.worker" in " ".join(p.cmdline())]
        assert (training / f"run-{run['id']}").is_dir()
        psutil.Process(server.pid).terminate()  # SIGTERM
        psutil.Process(server.pid).wait(timeout=60)
    wait_until(lambda: not worker.is_running(), 30)
    assert not training.exists()
