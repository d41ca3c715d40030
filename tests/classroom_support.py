"""Helpers for classroom-session tests that need real servers: uvicorn processes, redis-server, SSE reading."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.harness import REDIS_SERVER, REPO_ROOT, RedisServer, free_port, start_redis, stop_process

__all__ = ["REDIS_SERVER", "REPO_ROOT", "RedisServer", "free_port", "start_redis"]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, timeout: float = 15) -> float:
        """SIGTERM, then SIGKILL after ``timeout``; the seconds it took to exit."""
        return stop_process(self.process, timeout)


def start_server(tmp: Path, env: dict[str, str], name: str = "server", timeout: float = 120) -> Server:
    """A real uvicorn running the app on 127.0.0.1 and a free port, waited for until healthy."""
    port = free_port()
    full_env = {**os.environ, "CONVSCOPE_STORAGE_DIR": str(tmp / "images"), "PYTHONUNBUFFERED": "1",
                "OMP_NUM_THREADS": "1", **env}
    log_path = tmp / f"{name}.log"
    command = [sys.executable, "-m", "uvicorn", "server.main:create_app", "--factory", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(server.url + "/api/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"{name} did not become healthy in {timeout} s:\n{server.log()}")




def sse_events(lines: Iterator[str]) -> Iterator[dict]:
    """Parse an event stream (httpx ``iter_lines()``) into dicts: id, event, data (JSON), comment."""
    event: dict = {}
    for line in lines:
        if line == "":
            if event:
                yield event
            event = {}
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "":
            event.setdefault("comment", value)
        elif field == "data":
            event["data"] = json.loads(value)
        else:
            event[field] = value


def next_event(events: Iterator[dict], kind: str = "state") -> dict:
    """The next event of ``kind`` (skipping heartbeats and the retry hint)."""
    for event in events:
        if event.get("event") == kind:
            return event
    raise AssertionError(f"the stream ended before an {kind!r} event")


def same_predictions(got: list[dict], expected: list[dict]) -> bool:
    """Equal classes in the same order, probabilities equal to float32 rounding (a batched forward pass
    may differ from a single one in the last bits)."""
    return [(p["index"], p["label"]) for p in got] == [(p["index"], p["label"]) for p in expected] and all(
        math.isclose(g["probability"], e["probability"], rel_tol=1e-5, abs_tol=1e-7) for g, e in zip(got, expected))
