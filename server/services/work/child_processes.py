"""Untrusted files are parsed in fresh child processes under hard limits: one job per process.

The child sets its own CPU-time and address-space limits before it reads the job (see
``server.services.images.decode_worker.set_limits``), and the parent kills it after a wall-clock timeout,
so a crafted file costs a bounded few seconds and whatever memory it made the parser take goes back to the
system with the child. One worker is started ahead (its imports done) for the next job; at most
``max_processes`` run at once, the others wait for a slot (then 503). Used for image uploads
(``images.decode``) and model uploads (``model_uploads``).

Children die with the server: each is told the server's pid (in the ``parent_env`` variable its worker
reads, ``decode_worker.PARENT_ENV``) and asks the kernel for
SIGKILL when its parent dies (``decode_worker.die_with_server``). The kernel's parent-death signal fires
when the *thread* that forked the child ends, and request threads come and go, so every child is started
by one long-lived spawner thread.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from server.errors import ApiError


@dataclass(frozen=True)
class ChildResult:
    returncode: int | None  # None: killed after the wall-clock timeout
    stdout: bytes


class ChildProcessPool:
    """Runs ``argv`` once per job, with the job's bytes on stdin; thread-safe."""

    def __init__(self, argv: Sequence[str], max_processes: int, wall_seconds: float, what: str,
                 parent_env: str, env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.wall_seconds = wall_seconds
        self.what = what  # "image decoder", "model converter": for the 503 message
        self._slots = threading.BoundedSemaphore(max(1, max_processes))
        self._env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                     **(env or {}), parent_env: str(os.getpid())}
        self._spare: subprocess.Popen | None = None  # one worker started ahead, its imports done
        self._spare_lock = threading.Lock()
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{what.replace(' ', '-')}-spawner")

    def _popen(self) -> subprocess.Popen:
        return subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                env=self._env)

    def _start(self) -> subprocess.Popen:
        try:
            return self._spawner.submit(self._popen).result()
        except RuntimeError:  # closed (the server is stopping): this one thread lives as long as the job
            return self._popen()

    def _worker(self) -> subprocess.Popen:
        """A started worker (the spare when there is one), and a new spare started for the next job. An idle
        spare only waits on its stdin; when the server exits, the pipe closes and so does it."""
        with self._spare_lock:
            proc, self._spare = self._spare, None
            if proc is None or proc.poll() is not None:
                proc = self._start()
            self._spare = self._start()
        return proc

    def close(self) -> None:
        with self._spare_lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            spare.kill()
            spare.communicate()
        self._spawner.shutdown(wait=False)

    def run(self, job: bytes) -> ChildResult:
        """Run one job: its exit status and output, or ``returncode=None`` when it ran out of wall-clock time
        (then it was killed). 503 when every slot stayed busy for the wall-clock time."""
        if not self._slots.acquire(timeout=self.wall_seconds):
            raise ApiError(503, "overloaded", f"Every {self.what} is busy; try again in a moment.",
                           {"Retry-After": "2"})
        try:
            proc = self._worker()
            try:
                out, _ = proc.communicate(job, timeout=self.wall_seconds)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                return ChildResult(None, b"")
            finally:
                if proc.poll() is None:  # an exception above (e.g. a broken pipe): never leave the child running
                    proc.kill()
                    proc.wait()
            return ChildResult(proc.returncode, out)
        finally:
            self._slots.release()
