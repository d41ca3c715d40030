"""Training runs on the job queue (issue 26 §2) when Redis loses its data, and the owner's limits there: two
replicas (apps on one real redis-server, as ``test_redis_away_is_a_503_not_a_500`` drives them) and one real
``convscope worker`` share one training folder.

- A redis-server restarted empty (no persistence) loses the run list; the records on the shared disk bring it
  back: a finished run as it was, a run that was training as failed, "interrupted", and the checkpoints of both
  answer (equal to plain PyTorch on the checkpoint file) on both replicas. A deleted run stays deleted, also when
  the replica deleting it died half way.
- A run whose owner went away (no request, no stream) stops after ``training_client_grace_s``, another client
  watching does not hold it; a run stops after ``training_max_run_s`` although its owner watches: both as the
  replica that admitted it is configured, whatever the worker's own settings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from models.datasets import mnist
from server.main import create_app
from server.services.training import queued
from server.settings import Settings
from tests.conftest import png_bytes
from tests.deploy.deployment import Worker
from tests.harness import SHARED_DATA, RedisServer, start_redis, wait_until
from tests.training_support import LONG, ON_THE_QUEUE, SHORT, checkpoint_probabilities, run_state, run_until

pytestmark = ON_THE_QUEUE
OWNER, OTHER, THIRD = ("10.0.0.1", 50000), ("10.0.0.2", 50000), ("10.0.0.3", 50000)


@pytest.fixture(scope="module")
def queue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, Path]]:
    """A real redis-server and one real worker (its own settings: the defaults) on a shared training folder."""
    folder = tmp_path_factory.mktemp("training-queue-recovery")
    redis = start_redis(folder)
    worker = Worker("worker", {"CONVSCOPE_REDIS_URL": redis.url, "CONVSCOPE_TRAINING_DIR": str(folder / "training"),
                               "CONVSCOPE_DATA_DIR": str(SHARED_DATA)}, folder)
    try:
        worker.start()
        yield redis, folder
    finally:
        worker.stop()
        redis.stop()


@contextmanager
def replicas(redis: RedisServer, folder: Path, **limits: Any) -> Iterator[dict[str, TestClient]]:
    """Two replicas: ``a`` and ``b`` as the owner sees them, ``other_b`` and ``third_a``: two other clients."""
    apps = [create_app(Settings(storage_dir=folder / f"images-{name}", redis_url=redis.url, data_dir=SHARED_DATA,
                                training_dir=folder / "training", **limits)) for name in "ab"]
    with TestClient(apps[0], client=OWNER) as a, TestClient(apps[1], client=OWNER) as b:
        wait_until(lambda: a.get("/api/training/runs").json()["ready"], 120, "the worker to listen", 0.2)
        yield {"a": a, "b": b, "other_b": TestClient(apps[1], client=OTHER),
               "third_a": TestClient(apps[0], client=THIRD)}


def _start(client: TestClient, knobs: dict) -> str:
    answer = client.post("/api/training/runs", json=knobs)
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def _listed(client: TestClient) -> set[str]:
    return {run["id"] for run in client.get("/api/training/runs").json()["runs"]}


def test_the_runs_outlive_a_redis_restart_without_persistence(queue) -> None:
    redis, folder = queue
    digit = mnist.load_mnist_test(SHARED_DATA)[0][9002]
    with replicas(redis, folder) as clients:
        a, b = clients["a"], clients["b"]
        done = _start(a, SHORT)
        run_until(b, done, "done")
        deleted = _start(b, SHORT)
        run_until(a, deleted, "done")
        assert a.delete(f"/api/training/runs/{deleted}").status_code == 200
        training = _start(a, LONG)
        wait_until(lambda: run_state(b, training)["checkpoints"], 120, "the long run training, with its epoch-0", 0.1)
        assert run_state(b, training)["state"] == "running"
        wait_until(lambda: deleted not in _listed(b), 30, "the delete to reach b")

        redis.restart()  # an empty Redis on the same port: the index, records, streams and RQ's jobs are gone
        for client in (a, b):
            interrupted = run_until(client, training, "failed", 30)  # this replica has followed the empty Redis
            assert {done, training} <= _listed(client) and deleted not in _listed(client)
            assert run_state(client, done)["state"] == "done"
            assert interrupted["message"] == ("Interrupted: the job queue's Redis lost its runs while it trained; "
                                              "its checkpoints up to epoch-0 are kept and usable."), interrupted
            image_id = client.post("/api/images", files={"file": ("d.png", png_bytes(digit), "image/png")}).json()
            for run_id, knobs, weights in ((done, SHORT, "epoch-1"), (training, LONG, "epoch-0")):
                answer = client.get(f"/api/models/run-{run_id}/images/{image_id['image_id']}/predictions",
                                    params={"weights": weights, "top_k": 10})
                assert answer.status_code == 200, answer.text
                reference = checkpoint_probabilities(knobs, folder / "training" / f"run-{run_id}" / f"{weights}.pt",
                                                     digit)
                for row in answer.json()["predictions"]:
                    assert row["probability"] == pytest.approx(reference[row["index"]], abs=1e-5)
        assert not (folder / "training" / f"run-{deleted}").exists()
        on_disk = json.loads((folder / "training" / f"run-{training}" / "run.json").read_text())["run"]
        assert on_disk["state"] == "failed" and on_disk["message"] == interrupted["message"]  # for the next restart
        again = _start(b, SHORT)  # the interrupted run holds no limit, and the worker takes jobs again
        run_until(a, again, "done")


def test_a_run_deleted_by_a_replica_that_died_half_way_stays_deleted(queue, monkeypatch) -> None:
    redis, folder = queue
    with replicas(redis, folder) as clients:
        a, b = clients["a"], clients["b"]
        run_id = _start(a, SHORT)
        run_until(b, run_id, "done")

        def died(*_args: Any) -> None:
            raise RuntimeError("the replica died here")

        with monkeypatch.context() as patch, pytest.raises(RuntimeError, match="died here"):
            patch.setattr(queued, "forget", died)  # after its first step (the folder), before Redis heard of it
            b.delete(f"/api/training/runs/{run_id}")
        redis.restart()
        kept = _start(a, SHORT)  # the replicas re-seed the index from the disk (and follow it) before this
        run_until(b, kept, "done")
        for client in (a, b):
            assert run_id not in _listed(client)
            assert client.get(f"/api/training/runs/{run_id}").status_code == 404
        assert not list((folder / "training").glob(f"*run-{run_id}*"))


def test_a_run_whose_owner_left_stops_after_the_grace(queue) -> None:
    redis, folder = queue
    grace = 1.0  # the worker's own setting is the default minute: the replica that admitted the run decides
    with replicas(redis, folder, training_client_grace_s=grace) as clients:
        run_id = _start(clients["a"], LONG)
        # the owner asks about it through the other replica
        points = len(run_until(clients["b"], run_id, "running")["points"])
        # a point comes every training_point_interval_s (0.4 s): ten more are about four times the grace
        wait_until(lambda: (lambda s: s["state"] == "running" and len(s["points"]) > points + 10)(
            run_state(clients["b"], run_id)), 60, "the run to go on while its owner asks about it", 0.1)
        # the owner goes away; another client watching does not hold the run
        stopped = run_until(clients["other_b"], run_id, "stopped", 30)
        assert stopped["checkpoints"][0]["weights"] == "epoch-0"
        run_until(clients["b"], _start(clients["b"], SHORT), "done")  # the limit is free again


def test_the_limits_hold_across_replicas_and_a_run_ends_after_the_longest_run(queue) -> None:
    redis, folder = queue
    with replicas(redis, folder, training_max_run_s=3.0, max_training_runs=2) as clients:
        mine = _start(clients["b"], LONG)
        theirs = _start(clients["other_b"], LONG)  # queued behind it: one worker, but it counts
        for client, code in ((clients["a"], "run_in_progress"), (clients["third_a"], "training_busy")):
            answer = client.post("/api/training/runs", json=SHORT)
            assert answer.status_code == 429 and answer.json()["error"]["code"] == code, answer.text
            assert int(answer.headers["Retry-After"]) >= 1
        # the owner watches all along (through a), yet the run has had its time; then the queued one has too
        assert run_until(clients["a"], mine, "stopped", 60)["checkpoints"]
        run_until(clients["a"], theirs, "stopped", 60)
        run_until(clients["a"], _start(clients["third_a"], SHORT), "done")
