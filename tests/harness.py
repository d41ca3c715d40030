"""The one test harness: shared data, free ports, waiting with a deadline, real servers (a uvicorn
subprocess, an in-process uvicorn, redis-server) and the hook-removal check. Every helper a test file
shares lives here (or in a *_support module), never in another test_*.py file.

``tests/real_server.py`` re-exports the real-server part for the branches that import it by that name."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import uvicorn
from fastapi import FastAPI
from torch import nn
from torch.nn.modules import module as module_globals

from server.services.runtime.hooks import PERMANENT_HOOKS

REPO_ROOT = Path(__file__).resolve().parent.parent
# the offline data every worktree shares (MNIST, Fashion-MNIST, photos): never committed
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT_S = 120


@dataclass(frozen=True)
class LiveServer:
    url: str
    host: str
    port: int
    pid: int
    log: Path


def free_port(host: str = "127.0.0.1") -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def client_at(address: str, base_url: str) -> httpx.Client:
    """An HTTP client whose connections come from ``address`` (127.0.0.2, … are all this machine): distinct
    clients the way a class's laptops are."""
    return httpx.Client(base_url=base_url, timeout=60, transport=httpx.HTTPTransport(local_address=address))


def wait_until(condition: Callable[[], bool], timeout: float = 60.0, what: str = "the condition",
               poll_s: float = 0.005) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds saying what did not happen (every
    wait in the tests has a deadline)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(poll_s)


def poll_json(get: Callable[[], Any], timeout: float, what: str, on_pending: Callable[[Any], None] | None = None,
              poll_s: float = 0.2) -> Any:
    """Ask ``get()`` (an HTTP GET answering 202 while the server computes) until it answers 200, as the page
    polls; ``on_pending`` checks each 202 answer. Returns the 200 answer's JSON; fails after ``timeout`` s."""
    answer: list[Any] = []

    def ready() -> bool:
        response = get()
        if response.status_code == 200:
            answer.append(response.json())
            return True
        assert response.status_code == 202, response.text
        if on_pending is not None:
            on_pending(response)
        return False

    wait_until(ready, timeout=timeout, what=what, poll_s=poll_s)
    return answer[0]


def uvicorn_command(host: str, port: int, cli: bool = False) -> list[str]:
    """How the tests start the app: ``convscope serve`` (``cli``) or bare ``uvicorn server.main:create_app``."""
    if cli:
        return [sys.executable, "-m", "server.cli", "serve", "--host", host, "--port", str(port)]
    return [sys.executable, "-m", "uvicorn", "server.main:create_app", "--factory", "--host", host,
            "--port", str(port), "--log-level", "warning", "--timeout-graceful-shutdown", "5"]


def wait_healthy(url: str, process: subprocess.Popen, log_path: Path, timeout: float = START_TIMEOUT_S) -> None:
    """Until ``GET url/api/health`` answers 200 with status "ok" (``convscope serve`` answers 503 "starting"
    at once, server.startup: wait for the app itself); fails with the log's end when the process exits or the
    deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/api/health", timeout=2) as response:
                if response.status == 200 and json.loads(response.read()).get("status") == "ok":
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.2)


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
    with log_path.open("wb") as log:
        process = subprocess.Popen(uvicorn_command(host, port, cli), cwd=REPO_ROOT, env=full_env, stdout=log,
                                   stderr=subprocess.STDOUT)
    url = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"
    try:
        wait_healthy(url, process, log_path, start_timeout_s)
        yield LiveServer(url, host, port, process.pid, log_path)
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen, timeout: float = 15.0, sig: int = signal.SIGTERM) -> float:
    """``sig`` (SIGTERM), then SIGKILL after ``timeout`` seconds; waited for either way. The seconds it took."""
    start = time.monotonic()
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    return time.monotonic() - start


@contextmanager
def serving(app: FastAPI) -> Iterator[int]:
    """Serve ``app`` with a real uvicorn on a free loopback port, in this process (so a test can look inside
    the app afterwards); yields the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@dataclass
class RedisServer:
    url: str
    process: subprocess.Popen
    folder: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            stop_process(self.process, timeout=10)

    def restart(self) -> None:
        """Stop it and start a new, empty one on the same port: a restart without persistence."""
        self.stop()
        self.process = start_redis(self.folder, int(self.url.rsplit(":", 1)[1].split("/")[0])).process


def start_redis(tmp: Path, port: int | None = None) -> RedisServer:
    """Debian's redis-server on a free loopback port (or ``port``), no persistence, in ``tmp``."""
    port = port or free_port()
    process = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp), "--protected-mode", "yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return RedisServer(f"redis://127.0.0.1:{port}/0", process, tmp)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("redis-server did not answer PING")


# --- the deployment's parts: restartable replicas and nginx (issue 26) ---------------------------------

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PROXY_CONF = REPO_ROOT / "deploy" / "nginx" / "proxy.conf"


@dataclass
class UvicornProcess:
    """A uvicorn serving the app on a fixed port, started and stopped (any signal) as often as a test wants:
    a replica behind a proxy that expects it there."""

    name: str
    port: int
    env: dict[str, str]
    folder: Path
    process: subprocess.Popen | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / f"{self.name}-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **self.env,
               "CONVSCOPE_STORAGE_DIR": str(self.folder / "images")}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(uvicorn_command("127.0.0.1", self.port), cwd=REPO_ROOT, env=env,
                                            stdout=log, stderr=subprocess.STDOUT)

    def wait(self, timeout: float = START_TIMEOUT_S) -> None:
        assert self.process is not None
        wait_healthy(self.url, self.process, self.log, timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> float:
        """Send ``sig`` and wait for the exit (SIGKILL after ``timeout``); the seconds it took."""
        return 0.0 if self.process is None else stop_process(self.process, timeout, sig)


@dataclass
class Nginx:
    """Debian's nginx in front of ``upstreams`` (loopback ports) with the deployment's own locations
    (deploy/nginx/proxy.conf); it connects to them from ``bind`` (the one address replicas trust)."""

    port: int
    folder: Path
    upstreams: list[int]
    bind: str = "127.0.0.2"
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        servers = "\n".join(f"        server 127.0.0.1:{port} max_fails=2 fail_timeout=5s;" for port in self.upstreams)
        temp = self.folder / "temp"
        user = "user root;\n" if os.geteuid() == 0 else ""
        return f"""{user}daemon off;
worker_processes 1;
pid {self.folder}/nginx.pid;
error_log {self.folder}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {self.folder}/access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    upstream convscope {{
{servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{self.port};
        proxy_bind {self.bind};
        add_header X-Upstream $upstream_addr always;
        include {PROXY_CONF};
    }}
}}
"""

    def start(self) -> None:
        (self.folder / "temp").mkdir(parents=True, exist_ok=True)
        conf = self.folder / "nginx.conf"
        conf.write_text(self.config())
        checked = subprocess.run([NGINX, "-t", "-c", str(conf), "-p", str(self.folder)], capture_output=True, text=True)
        if checked.returncode != 0:
            raise RuntimeError(f"nginx -t refused the configuration:\n{checked.stderr}")
        log = (self.folder / "nginx.out").open("wb")
        self.process = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(self.folder)], stdout=log,
                                        stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {(self.folder / 'error.log').read_text(errors='replace')}")
            try:
                with urllib.request.urlopen(self.url + "/nginx-health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("nginx did not answer")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: its workers finish and exit with it
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def assert_no_hooks(model: nn.Module) -> None:
    """No hook left on ``model`` but the permanent ones a loaded model is built with (its max-pools')."""
    for name, sub in model.named_modules():
        forward = [h for h in sub._forward_hooks.values() if h not in PERMANENT_HOOKS]
        pre = [h for h in sub._forward_pre_hooks.values() if h not in PERMANENT_HOOKS]
        assert not forward, f"forward hook left on {name or 'the model'}"
        assert not pre, f"forward pre-hook left on {name or 'the model'}"
        assert not sub._backward_hooks, f"backward hook left on {name or 'the model'}"
        assert not getattr(sub, "_backward_pre_hooks", {}), f"backward pre-hook left on {name or 'the model'}"
    assert not module_globals._global_forward_hooks
    assert not module_globals._global_forward_pre_hooks


# --- driving the app at the ASGI level, so an upload body really streams ---------------------------------

class CountingBody:
    """An upload body delivered in chunks; remembers how much of it the server asked for."""

    def __init__(self, head: bytes, chunk: bytes, chunks: int, tail: bytes = b"") -> None:
        self.parts = [head] + [chunk] * chunks + [tail]
        self.pulled = 0
        self.total = sum(len(p) for p in self.parts)

    def bytes_pulled(self) -> int:
        return sum(len(p) for p in self.parts[: self.pulled])

    async def receive(self) -> dict:
        if self.pulled >= len(self.parts):
            await anyio.sleep(3600)  # the server must not wait for more than the body
        part = self.parts[self.pulled]
        self.pulled += 1
        return {"type": "http.request", "body": part, "more_body": self.pulled < len(self.parts)}


async def asgi_post(app: FastAPI, headers: list[tuple[bytes, bytes]], body: CountingBody,
                    path: str = "/api/images") -> tuple[int, bytes]:
    messages: list[dict] = []

    async def send(message: dict) -> None:
        messages.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "app": app}
    with anyio.fail_after(30):
        await app(scope, body.receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    return start["status"], b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
