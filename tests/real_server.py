"""A real uvicorn serving the app in a subprocess on a free loopback port, for tests that need real sockets
or the server's own memory (``psutil.Process(server.pid)``). Always stopped when the block ends."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 120


@dataclass(frozen=True)
class LiveServer:
    url: str
    host: str
    port: int
    pid: int
    log: Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@contextmanager
def live_server(tmp: Path, env: dict[str, str] | None = None, host: str = "127.0.0.1", threads: int | None = 1,
                start_timeout_s: float = START_TIMEOUT_S, cli: bool = False) -> Iterator[LiveServer]:
    """``CONVSCOPE_*`` settings go in ``env``; the image store is a folder under ``tmp``. ``threads``: torch's
    threads in the server (None: its default, as ``convscope serve`` runs). ``cli``: start it the way users
    do, ``convscope serve`` (its uvicorn options), instead of bare ``uvicorn server.main:create_app``."""
    port = free_port(host)
    full_env = {**os.environ, "CONVSCOPE_STORAGE_DIR": str(tmp / "images"), "PYTHONUNBUFFERED": "1",
                **({"OMP_NUM_THREADS": str(threads)} if threads else {}), **(env or {})}
    log_path = tmp / f"uvicorn-{port}.log"
    command = ([sys.executable, "-m", "server.cli", "serve", "--host", host, "--port", str(port)] if cli else
               [sys.executable, "-m", "uvicorn", "server.main:create_app", "--factory", "--host", host,
                "--port", str(port), "--log-level", "warning"])
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/api/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"uvicorn did not start:\n{log_path.read_text()[-3000:]}") from None
                time.sleep(0.2)
        yield LiveServer(url, host, port, process.pid, log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
