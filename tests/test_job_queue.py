"""Background jobs through RQ (services/work/job_queue.py) against a real redis-server and a real
``convscope worker --burst``: a worker's result equals the in-process computation, progress and per-client
limits are read through Redis, a queued job is cancelled before any worker takes it; and a request cancelled
because its server stops is a 503 a proxy retries elsewhere, not a 499."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from server.errors import ApiError
from server.services.channels import feature_vis as fv
from server.services.runtime.model_runtime import ModelRuntime
from server.services.work.background_jobs import BackgroundJobs
from server.services.work.cancel import CancelToken, WorkCancelled, bound
from server.services.work.job_queue import QueuedJobs, Task, failure_message
from tests.harness import REDIS_SERVER, REPO_ROOT, RedisServer, start_redis

pytestmark = pytest.mark.skipif(not Path(REDIS_SERVER).exists(), reason="redis-server is not installed")



@pytest.fixture
def jobs(redis_server: RedisServer) -> Iterator[QueuedJobs]:
    import redis

    with redis.Redis.from_url(redis_server.url) as admin:
        admin.flushall()
    queued = QueuedJobs(redis_server.url, BackgroundJobs(4), max_queue=3, per_client=2)
    try:
        yield queued
    finally:
        queued.close()


def _burst_worker(redis_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "CONVSCOPE_REDIS_URL": redis_url, "CONVSCOPE_STORAGE_DIR": str(tmp_path / "images"),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "server.cli", "worker", "--burst"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def _params(seed: int) -> dict:
    return {"model": "lenet5", "weights": "trained", "layer": "features.3", "channel": 2, "seed": seed, "steps": 12,
            "mixing": None, "description": "test"}


def test_a_worker_computes_what_this_process_would(jobs: QueuedJobs, redis_server: RedisServer, tmp_path: Path) -> None:
    def never(_job):  # the queue runs the task on a worker, never this
        raise AssertionError("ran in the replica")

    with bound(CancelToken(), "10.0.0.1"):
        first = jobs.submit(("fv", 1), never, total=12, task=Task("featurevis", _params(1)), info={"steps": 12})
        assert first.state == "queued" and first.as_json()["progress"] == {"done": 0, "total": 12}
        assert first.info["workers"] == 0  # said, so the page can tell nobody is computing yet
        assert jobs.submit(("fv", 1), never, task=Task("featurevis", _params(1))).state == "queued"  # one job
        jobs.submit(("fv", 2), never, total=12, task=Task("featurevis", _params(2)))
        with pytest.raises(ApiError) as refused:  # two per client
            jobs.submit(("fv", 3), never, task=Task("featurevis", _params(3)))
        assert refused.value.status == 429 and refused.value.code == "too_many_jobs_for_client"
    with bound(CancelToken(), "10.0.0.2"):
        jobs.submit(("fv", 4), never, task=Task("featurevis", _params(4)))  # another client
        cancelled = jobs.cancel(("fv", 4))
    assert cancelled is not None and cancelled.state == "cancelled"
    _burst_worker(redis_server.url, tmp_path)
    done = jobs.get(("fv", 1))
    assert done is not None and done.state == "done" and done.as_json()["progress"] == {"done": 12, "total": 12}
    loaded = ModelRuntime(torch.device("cpu")).load("lenet5")
    picture, value = fv.optimise(loaded, loaded.named_layer("features.3"), 2, steps=12, seed=1)
    assert done.result["png"] == fv.to_png(picture)
    assert done.result["meta"]["objective"] == pytest.approx(value, rel=1e-6)
    assert jobs.get(("fv", 4)).state == "cancelled"  # never run
    jobs.forget(("fv", 1))
    assert jobs.get(("fv", 1)) is None


def test_jobs_without_a_task_run_in_this_process(jobs: QueuedJobs) -> None:
    import time

    job = jobs.submit("local", lambda job: job.progress(1, 1), total=1)
    deadline = time.monotonic() + 30
    while job.state != "done":
        assert time.monotonic() < deadline, job.state
        time.sleep(0.05)
    assert jobs.get("local") is job


def test_failure_messages_say_why() -> None:
    assert "died (signal 9)" in failure_message("Work-horse terminated unexpectedly; waitpid returned 9 (signal 9); ")
    assert "went away" in failure_message("Moved to FailedJobRegistry, due to AbandonedJobError, at 2026")
    assert failure_message("Traceback...\nValueError: bad") == "ValueError: bad"


def test_an_unreachable_redis_is_a_clear_503(tmp_path: Path) -> None:
    server = start_redis(tmp_path)
    queued = QueuedJobs(server.url, BackgroundJobs(2), max_queue=2, per_client=2)
    server.stop()
    try:
        with pytest.raises(ApiError) as err:
            queued.get(("fv", 1))
        assert err.value.status == 503 and err.value.code == "jobs_unavailable" and err.value.headers["Retry-After"]
    finally:
        queued.close()


def test_work_cancelled_because_the_server_stops_is_a_503_to_retry_elsewhere() -> None:
    left, stopping = CancelToken(), CancelToken()
    left.cancel()
    stopping.cancel(stopping=True)
    with bound(left), pytest.raises(WorkCancelled) as gone:
        left.check()
    assert gone.value.status == 499
    with bound(stopping), pytest.raises(WorkCancelled) as stopped:
        stopping.check()
    assert stopped.value.status == 503 and stopped.value.code == "shutting_down"
    assert stopped.value.headers["Retry-After"] == "1"
