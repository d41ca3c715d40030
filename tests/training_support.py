"""Shared by the training tests: the training worker processes alive under this test process, and a run's
event stream read to its end."""

from __future__ import annotations

import json

import psutil
from fastapi.testclient import TestClient


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
