"""The deployment test's own parts: ``convscope worker`` processes and the deployment they form with the
harness's nginx, uvicorn replicas and redis-server (tests/harness.py), each stopped by its process id.

nginx connects to the replicas from 127.0.0.2 (``proxy_bind``) and the replicas believe X-Forwarded-For from
that address only, so a test client on 127.0.0.1 talking to a replica directly cannot pose as anyone; test
clients bind their own loopback addresses (127.0.0.10, …) to be different clients through nginx.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness import REPO_ROOT, Nginx, UvicornProcess, free_port

NGINX_ADDRESS = "127.0.0.2"  # nginx's own address towards the replicas: the one proxy they trust


@dataclass
class Worker:
    name: str
    env: dict[str, str]
    folder: Path
    process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **self.env,
               "CONVSCOPE_STORAGE_DIR": str(self.folder / f"{self.name}-images")}
        with (self.folder / f"{self.name}.log").open("wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "server.cli", "worker"], cwd=REPO_ROOT, env=env,
                                            stdout=log, stderr=subprocess.STDOUT)

    def children(self) -> list[int]:
        """The worker's work horses (the processes computing a job)."""
        import psutil

        assert self.process is not None
        try:
            return [child.pid for child in psutil.Process(self.process.pid).children()]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # RQ: a first SIGTERM waits for the current job, a second ends it
            time.sleep(0.2)
            if self.process.poll() is None:
                self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:  # an idle RQ worker may sit in its blocking dequeue: no job is lost
                self.process.kill()
                self.process.wait(timeout=5)


@dataclass
class Deployment:
    nginx: Nginx
    replicas: list[UvicornProcess]
    workers: list[Worker]
    redis_url: str
    figures: dict[str, str] = field(default_factory=dict)


def distinct_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)
