"""Untrusted files are parsed in fresh child processes under hard limits: one job per process.

The child sets its own CPU-time and address-space limits before it reads the job (see
``server.services.images.decode_worker.set_limits``), and the parent kills it after a wall-clock timeout,
so a crafted file costs a bounded few seconds and whatever memory it made the parser take goes back to the
system with the child. One worker is started ahead (its imports done) for the next job; at most
``max_processes`` run at once, the others wait for a slot (then 503). Used for image uploads
(``images.decode``) and model uploads (``model_uploads``); long-lived children that stream (training runs,
``services.training``) are started with the same :class:`ChildSpawner`. A worker that writes ``ready_line`` first, once its
imports are done, lets a job return only when the next job's worker has started (at most
``spare_wait_seconds``), so that the work following a job (the first views of a just-uploaded image) does not
share the cores with a Python start-up.

Children die with the server: each is told the server's pid (in the ``parent_env`` variable its worker
reads, ``decode_worker.PARENT_ENV``) and asks the kernel for
SIGKILL when its parent dies (``decode_worker.die_with_server``). The kernel's parent-death signal fires
when the *thread* that forked the child ends, and request threads come and go, so every child is started
by one long-lived spawner thread.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from server.errors import ApiError


class ChildSpawner:
    """Starts child processes from one long-lived thread. The kernel's parent-death signal (which the
    children ask for, ``decode_worker.die_with_server``) fires when the *thread* that forked a child ends,
    and request threads come and go."""

    def __init__(self, name: str) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        try:
            return self._thread.submit(subprocess.Popen, list(argv), **kwargs).result()
        except RuntimeError:  # closed (the server is stopping): this one thread lives as long as the child
            return subprocess.Popen(list(argv), **kwargs)

    def close(self) -> None:
        self._thread.shutdown(wait=False)


@dataclass(frozen=True)
class ChildResult:
    returncode: int | None  # None: killed after the wall-clock timeout
    stdout: bytes

    def answer(self) -> tuple[dict[str, Any], bytes]:
        """The worker's JSON answer line and the bytes after it; an ``{"error": [status, code, message]}`` answer
        is raised as that :class:`ApiError`. A missing or garbled line is an empty answer."""
        line, _, rest = self.stdout.partition(b"\n")
        try:
            answer = json.loads(line) if line else {}
        except ValueError:
            answer = {}
        if not isinstance(answer, dict):
            answer = {}
        if "error" in answer:
            status, code, message = answer["error"]
            raise ApiError(int(status), str(code), str(message))
        return answer, rest


class ChildProcessPool:
    """Runs ``argv`` once per job, with the job's bytes on stdin; thread-safe."""

    def __init__(self, argv: Sequence[str], max_processes: int, wall_seconds: float, what: str,
                 parent_env: str, env: dict[str, str] | None = None, ready_line: bytes | None = None,
                 spare_wait_seconds: float = 0.0) -> None:
        self.argv = list(argv)
        self.wall_seconds = wall_seconds
        self.what = what  # "image decoder", "model converter": for the 503 message
        self._slots = threading.BoundedSemaphore(max(1, max_processes))
        self._env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                     **(env or {}), parent_env: str(os.getpid())}
        self.ready_line = ready_line  # what the worker says first, once started (None: it says nothing)
        self.spare_wait_seconds = spare_wait_seconds
        self._spare: subprocess.Popen | None = None  # one worker started ahead
        self._spare_ready = False  # … which said its ready_line (read already)
        self._spare_lock = threading.Lock()
        self._spawner = ChildSpawner(f"{what.replace(' ', '-')}-spawner")

    def _start(self) -> subprocess.Popen:
        return self._spawner.popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, env=self._env)

    def _worker(self) -> tuple[subprocess.Popen, bool]:
        """A started worker (the spare when there is one) and whether its ready line was read; and a new spare
        started for the next job. An idle spare only waits on its stdin; when the server exits, the pipe closes
        and so does it."""
        with self._spare_lock:
            proc, ready, self._spare, self._spare_ready = self._spare, self._spare_ready, None, False
            if proc is None or proc.poll() is not None:
                proc, ready = self._start(), False
            self._spare = self._start()
        return proc, ready

    @property
    def spare_ready(self) -> bool:
        """Whether the worker for the next job has started (said its ready line) and waits."""
        with self._spare_lock:
            return self._spare is not None and self._spare_ready and self._spare.poll() is None

    def settle_spare(self) -> None:
        """Wait, at most ``spare_wait_seconds``, until the spare worker has said its ready line (a job calls this
        as it ends: it then waits only where the start-up is slower than the job was)."""
        if self.ready_line is None:
            return
        with self._spare_lock:
            spare = self._spare
            if spare is None or self._spare_ready:
                return
            said = self._read_ready(spare, self.spare_wait_seconds)
            if said is None:  # it died or said something else: the next job starts a fresh one
                spare.kill()
                spare.communicate()
                self._spare = None
            self._spare_ready = bool(said)

    def _read_ready(self, proc: subprocess.Popen, timeout: float) -> bool | None:
        """True when the worker said its ready line within ``timeout`` seconds, False when it did not (yet),
        None when it ended or said something else."""
        assert proc.stdout is not None and self.ready_line is not None
        fd = proc.stdout.fileno()  # the pipe itself: nothing may sit in a buffer that communicate() would miss
        if not select.select([fd], [], [], timeout)[0]:
            return False
        return True if os.read(fd, len(self.ready_line)) == self.ready_line else None

    def close(self) -> None:
        with self._spare_lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            spare.kill()
            spare.communicate()
        self._spawner.close()

    def run(self, job: bytes) -> ChildResult:
        """Run one job: its exit status and output, or ``returncode=None`` when it ran out of wall-clock time
        (then it was killed). 503 when every slot stayed busy for the wall-clock time."""
        if not self._slots.acquire(timeout=self.wall_seconds):
            raise ApiError(503, "overloaded", f"Every {self.what} is busy; try again in a moment.",
                           {"Retry-After": "2"})
        try:
            proc, ready = self._worker()
            try:
                if self.ready_line is not None and not ready:
                    self._read_ready(proc, self.wall_seconds)  # its first line (one that died answers nothing)
                out, _ = proc.communicate(job, timeout=self.wall_seconds)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                return ChildResult(None, b"")
            finally:
                if proc.poll() is None:  # an exception above (e.g. a broken pipe): never leave the child running
                    proc.kill()
                    proc.wait()
            if self.ready_line is not None and out.startswith(self.ready_line):  # slower to start than the wait
                out = out[len(self.ready_line):]
            return ChildResult(proc.returncode, out)
        finally:
            self._slots.release()
            self.settle_spare()
