"""The real parts of a ConvScope deployment on loopback: Debian's nginx with deploy/nginx/proxy.conf in front of
uvicorn replicas, redis-server, and ``convscope worker`` processes; each started on a free port and stopped by
its process id.

nginx connects to the replicas from 127.0.0.2 (``proxy_bind``) and the replicas believe X-Forwarded-For from
that address only, so a test client on 127.0.0.1 talking to a replica directly cannot pose as anyone; test
clients bind their own loopback addresses (127.0.0.10, …) to be different clients through nginx.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.classroom_support import REPO_ROOT, free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
NGINX_ADDRESS = "127.0.0.2"  # nginx's own address towards the replicas: the one proxy they trust
PROXY_CONF = REPO_ROOT / "deploy" / "nginx" / "proxy.conf"


def wait_healthy(url: str, process: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/api/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not become healthy in {timeout} s:\n{log.read_text(errors='replace')[-3000:]}")


@dataclass
class Replica:
    """A uvicorn serving the app on a fixed port (so it can be restarted where nginx expects it)."""

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
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "server.main:create_app", "--factory", "--host", "127.0.0.1",
                 "--port", str(self.port), "--log-level", "warning", "--timeout-graceful-shutdown", "5"],
                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait(self) -> None:
        assert self.process is not None
        wait_healthy(self.url, self.process, self.log)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> float:
        """Send ``sig`` and wait for the exit (SIGKILL after ``timeout``); the seconds it took."""
        start = time.monotonic()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        return time.monotonic() - start


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
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


@dataclass
class Nginx:
    port: int
    folder: Path
    upstreams: list[int]
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
        proxy_bind {NGINX_ADDRESS};
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


@dataclass
class Deployment:
    nginx: Nginx
    replicas: list[Replica]
    workers: list[Worker]
    redis_url: str
    figures: dict[str, str] = field(default_factory=dict)


def free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)
