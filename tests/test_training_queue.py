"""Training runs on the job queue (issue 26 §2): two uvicorn replicas and two ``convscope worker`` processes on a
real redis-server, sharing one training folder. A run started on one replica trains on a worker (never in a
replica); the other replica streams it, pauses, resumes and stops it; the limits hold across replicas (429 with
Retry-After); a worker process killed mid-run fails the run with the reason; and a finished run's checkpoint
answers the same predictions, equal to plain PyTorch on the checkpoint file, from either replica."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from models.datasets import mnist
from tests.conftest import png_bytes
from tests.deploy.deployment import Worker, distinct_ports
from tests.harness import SHARED_DATA, UvicornProcess, start_redis, wait_until
from tests.training_support import LONG, ON_THE_QUEUE, SHORT, checkpoint_probabilities, run_state, run_until

pytestmark = ON_THE_QUEUE
OWNER, OTHER = {"X-Forwarded-For": "10.0.0.1"}, {"X-Forwarded-For": "10.0.0.2"}  # two clients


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[httpx.Client], list[Worker], Path]]:
    folder = tmp_path_factory.mktemp("training-queue")
    redis = start_redis(folder)
    shared = {"CONVSCOPE_REDIS_URL": redis.url, "CONVSCOPE_TRAINING_DIR": str(folder / "training"),
              "CONVSCOPE_DATA_DIR": str(SHARED_DATA)}
    env = {**shared, "CONVSCOPE_IMAGE_STORE": redis.url, "CONVSCOPE_FORWARDED_ALLOW_IPS": "127.0.0.1",
           "CONVSCOPE_SSE_HEARTBEAT_S": "0.5"}
    replicas = [UvicornProcess(f"replica-{i}", port, env, folder) for i, port in enumerate(distinct_ports(2))]
    workers = [Worker(f"worker-{i}", shared, folder) for i in range(2)]
    clients: list[httpx.Client] = []
    try:
        for part in (*replicas, *workers):
            part.start()
        for replica in replicas:
            replica.wait(timeout=300)
            clients.append(httpx.Client(base_url=replica.url, timeout=60, headers=OWNER))
        wait_until(lambda: clients[0].get("/api/training/runs").json()["ready"], 120, "a worker to listen", 0.2)
        yield clients, workers, folder / "training"
        for replica in replicas:  # no replica ever trained: the runs went to the workers
            assert not [p for p in psutil.Process(replica.process.pid).children(recursive=True)
                        if "server.services.training.worker" in " ".join(p.cmdline())]
    finally:
        for client in clients:
            client.close()
        for part in (*workers, *replicas):
            part.stop()
        redis.stop()


def _events(client: httpx.Client, run_id: str, arrived: dict[str, float] | None = None,
            after: str | None = None) -> list[tuple[str, dict, str | None]]:
    """The run's events (kind, data, id) until its end; ``arrived``: when each kind of event first came;
    ``after``: the Last-Event-ID a re-attaching browser sends."""
    events, kind, number = [], None, None
    headers = {"Last-Event-ID": after} if after else {}
    with client.stream("GET", f"/api/training/runs/{run_id}/events", headers=headers) as response:
        for line in response.iter_lines():
            if line.startswith("id: "):
                number = line[4:]
            elif line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:]), number))
                number = None
                if arrived is not None:
                    arrived.setdefault(kind, time.monotonic())
                if kind == "end":
                    break
    return events


def test_controls_and_limits_from_any_replica(cluster) -> None:
    (a, b), _workers, _folder = cluster
    asked = time.monotonic()
    run = a.post("/api/training/runs", json=LONG)
    assert run.status_code == 201, run.text
    run_id = run.json()["id"]
    again = b.post("/api/training/runs", json=SHORT)  # the same client, through the other replica
    assert again.status_code == 429 and again.json()["error"]["code"] == "run_in_progress"
    assert int(again.headers["Retry-After"]) >= 1
    busy = b.post("/api/training/runs", json=SHORT, headers=OTHER)  # max_training_runs = 1 over all replicas
    assert busy.status_code == 429 and busy.json()["error"]["code"] == "training_busy"
    assert b.post(f"/api/training/runs/{run_id}/pause", headers=OTHER).status_code == 403  # only its owner

    run_until(b, run_id, "running")
    print(f"\nqueued run: running on the other replica {time.monotonic() - asked:.2f} s after Start")
    assert b.post(f"/api/training/runs/{run_id}/pause").status_code == 200
    paused = run_until(a, run_id, "paused")
    assert a.post(f"/api/training/runs/{run_id}/resume").status_code == 200
    wait_until(lambda: run_state(b, run_id)["latest"].get("step", 0) > paused["latest"].get("step", 0), 120,
               "a step after resuming, seen by the other replica", 0.1)
    assert b.post(f"/api/training/runs/{run_id}/stop").status_code == 200
    assert run_until(a, run_id, "stopped")["state"] == "stopped"
    assert b.post(f"/api/training/runs/{run_id}/pause").status_code == 409
    short = a.post("/api/training/runs", json=SHORT)  # the limit is free again
    assert short.status_code == 201, short.text
    run_until(b, short.json()["id"], "done")


def test_a_worker_killed_mid_run_fails_it_with_the_reason(cluster) -> None:
    (a, b), workers, _folder = cluster
    started = b.post("/api/training/runs", json=LONG)
    assert started.status_code == 201, started.text
    run_id = started.json()["id"]
    run_until(a, run_id, "running")
    horses = [pid for worker in workers for pid in worker.children()]
    assert len(horses) == 1, horses  # one work horse trains it
    killed = time.monotonic()
    os.kill(horses[0], signal.SIGKILL)
    for client in (a, b):
        failed = run_until(client, run_id, "failed", 60)
        assert "the worker process training it died (signal 9)" in failed["message"], failed["message"]
        print(f"\nkill -9 of the work horse: run failed on {client.base_url} after {time.monotonic() - killed:.2f} s "
              f"({failed['message']})")
    short = a.post("/api/training/runs", json=SHORT)  # the dead run holds no limit
    assert short.status_code == 201, short.text
    run_until(b, short.json()["id"], "done")


def test_a_run_streams_to_the_other_replica_and_its_checkpoints_work_on_both(cluster) -> None:
    (a, b), _workers, folder = cluster
    run_id = a.post("/api/training/runs", json=SHORT).json()["id"]
    assert a.post(f"/api/training/runs/{run_id}/pause").status_code == 200  # held until the stream is open
    arrived: dict[str, float] = {}
    with ThreadPoolExecutor(1) as pool:
        following = pool.submit(_events, b, run_id, arrived)
        wait_until(lambda: "snapshot" in arrived, 60, "the other replica's stream to open", 0.05)
        assert b.post(f"/api/training/runs/{run_id}/resume").status_code == 200
        events = following.result(timeout=120)
    kinds = [kind for kind, _, _ in events]
    assert kinds[0] == "snapshot" and kinds[-1] == "end" and events[-1][1]["state"] == "done", kinds
    assert "point" in kinds and kinds.count("epoch") == 1
    numbers = [data for kind, data, _ in events if kind == "point"]
    assert {"loss", "val_accuracy", "filters", "top5"} <= set(numbers[0])
    assert [data["weights"] for kind, data, _ in events if kind == "checkpoint"][-1] == "epoch-1"
    checkpoint = folder / f"run-{run_id}" / "epoch-1.pt"
    assert checkpoint.is_file()
    # a browser that re-attaches to the replica that started the run, with the last id the other one sent:
    # the event numbers are the run's own, so it gets exactly the events that follow
    first_point = next(i for i, (kind, _, _) in enumerate(events) if kind == "point")
    resumed = _events(a, run_id, after=events[first_point][2])
    assert [(k, d, n) for k, d, n in resumed if k != "end"] == [e for e in events[first_point + 1:] if e[0] != "end"]

    images, _labels = mnist.load_mnist_test(SHARED_DATA)
    digit = images[9002]
    reference = checkpoint_probabilities(SHORT, checkpoint, digit)
    image_id = a.post("/api/images", files={"file": ("d.png", png_bytes(digit), "image/png")}).json()["image_id"]
    answers = []
    for client in (a, b):
        assert run_state(client, run_id)["history"][0]["epoch"] == 1
        answer = client.get(f"/api/models/run-{run_id}/images/{image_id}/predictions",
                            params={"weights": "epoch-1", "top_k": 10})
        assert answer.status_code == 200, answer.text
        answers.append(answer.content)
        for row in answer.json()["predictions"]:
            assert row["probability"] == pytest.approx(reference[row["index"]], abs=1e-5)
    assert answers[0] == answers[1]
    assert b.patch(f"/api/training/runs/{run_id}", json={"name": "renamed on b"}).status_code == 200
    wait_until(lambda: run_state(a, run_id)["name"] == "renamed on b", 30, "the rename to reach the other replica")
    assert a.delete(f"/api/training/runs/{run_id}").status_code == 200
    wait_until(lambda: b.get(f"/api/training/runs/{run_id}").status_code == 404, 30, "the delete to reach b")
    assert b.get(f"/api/models/run-{run_id}").status_code == 404 and not checkpoint.parent.exists()


def test_redis_away_is_a_503_not_a_500(tmp_path) -> None:
    from fastapi.testclient import TestClient

    from server.main import create_app
    from server.settings import Settings

    redis = start_redis(tmp_path)
    settings = Settings(storage_dir=tmp_path / "images", redis_url=redis.url, training_dir=tmp_path / "training",
                        data_dir=SHARED_DATA)
    try:
        with TestClient(create_app(settings)) as client:
            assert client.get("/api/training/runs").status_code == 200
            redis.stop()
            for answer in (client.get("/api/training/runs/0123abcd"), client.post("/api/training/runs", json=SHORT),
                           client.get("/api/training/runs")):
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"]["code"] == "jobs_unavailable" and answer.headers["Retry-After"]
    finally:
        redis.stop()
