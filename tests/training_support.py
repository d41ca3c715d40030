"""Shared by the training tests: the training worker processes alive under this test process, a run's event
stream read to its end, a run's state polled until it is the one awaited, and what plain PyTorch answers on a
checkpoint file (the reference for the views)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import torch
from fastapi.testclient import TestClient

from models.preprocessing import MNIST_MEAN, MNIST_STD
from models.training.config import for_architecture
from models.training.networks import build_network
from tests.harness import REDIS_SERVER, SHARED_DATA, wait_until

SHORT = {"epochs": 1, "train_size": 128, "batch_size": 32}  # seconds of training on the bundled MNIST
LONG = {"epochs": 50, "train_size": 2000, "batch_size": 16}  # minutes of work: only ever stopped, killed or interrupted
# the marks of a module that trains on the job queue: a real redis-server and the offline MNIST
ON_THE_QUEUE = [
    pytest.mark.skipif(not Path(REDIS_SERVER).exists(), reason="redis-server is not installed"),
    pytest.mark.skipif(not (SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz").is_file(),
                       reason="../shared/data/mnist is not present"),
]


def workers(pid: int | None = None) -> list[psutil.Process]:
    """The training workers (children running server.services.training.worker) of process ``pid`` (this one
    by default)."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "server.services.training.worker" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def events_until_end(client: TestClient, run_id: str) -> list[tuple[str, dict]]:
    events, kind = [], None
    with client.stream("GET", f"/api/training/runs/{run_id}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
                if kind == "end":
                    break
    return events


def checkpoint_probabilities(knobs: dict, checkpoint: Path, digit: np.ndarray) -> list[float]:
    """The class probabilities plain PyTorch gives for an MNIST ``digit`` (uint8, 28×28) on a LeNet-5 checkpoint
    of a run started with ``knobs``."""
    model = build_network(for_architecture("lenet5", **knobs))
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    with torch.no_grad():
        x = (torch.from_numpy(digit).float()[None, None] / 255 - MNIST_MEAN) / MNIST_STD
        return torch.softmax(model.eval()(x)[0], 0).tolist()


def run_state(client: httpx.Client, run_id: str) -> dict:
    answer = client.get(f"/api/training/runs/{run_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def run_until(client: httpx.Client, run_id: str, state: str, timeout: float = 120) -> dict:
    """The run as ``client`` sees it once it is in ``state`` (polled every 0.1 s; fails after ``timeout`` s)."""
    seen: list[dict] = []
    try:
        wait_until(lambda: seen.append(run_state(client, run_id)) or seen[-1]["state"] == state, timeout,
                   f"run {run_id} {state}", 0.1)
    except AssertionError as exc:
        raise AssertionError(f"{exc} (last seen: {seen[-1]['state'] if seen else '-'})") from None
    return seen[-1]
