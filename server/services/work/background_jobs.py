"""Long computations the page polls for (channel examples over a dataset, feature visualisations).

One worker thread runs queued jobs one at a time from a bounded queue, so however many requests ask, at
most one such job computes while requests keep being answered; a full queue is refused (429 with
Retry-After) instead of growing. Each client holds at most ``per_client`` of its places (queued or
running; counted as in the heavy pool, :mod:`server.services.work.shares`), so one client cannot fill
the queue for everyone else: past its share it alone hears 429. Each job reports progress, can be cancelled between steps, and keeps
its outcome (a small state record; results live in the services' own caches) for the pollers.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

from server.errors import ApiError
from server.services.work.cancel import WorkCancelled, current_client
from server.services.work.clients import LOCAL, ClientId
from server.services.work.shares import Shares

log = logging.getLogger("convscope.jobs")
_FINISHED_KEPT = 256  # finished job records kept for pollers (a few hundred bytes each)


# Inside a job, cancellation is the one cancellation type of the work package (WorkCancelled): the job ends
# ``cancelled``.


@dataclass
class Job:
    key: Hashable
    run: Callable[[Job], Any]
    state: str = "queued"  # queued | running | done | failed | cancelled
    done: int = 0
    total: int = 0
    info: dict[str, Any] = field(default_factory=dict)  # job-specific numbers for the poller
    error: str = ""
    cancel_event: threading.Event = field(default_factory=threading.Event)
    finished_at: float = 0.0
    client: ClientId = LOCAL  # who asked first: the job counts against this client's share while it is pending

    def progress(self, done: int, total: int | None = None, **info: Any) -> None:
        """Report progress; raises :class:`WorkCancelled` once the job was cancelled (a step boundary)."""
        self.done = done
        if total is not None:
            self.total = total
        self.info.update(info)
        if self.cancel_event.is_set():
            raise WorkCancelled("the job was cancelled")

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "progress": {"done": self.done, "total": self.total}, **self.info}
        if self.error:
            out["error"] = self.error
        return out


class JobView(Protocol):
    """What the services read of a job, wherever it runs (this process, or a worker through the queue)."""

    state: str
    error: str
    info: dict[str, Any]

    def as_json(self) -> dict[str, Any]: ...


class Jobs(Protocol):
    """Where background jobs go: :class:`BackgroundJobs` (this process) or, with ``CONVSCOPE_REDIS_URL``,
    :class:`server.services.work.job_queue.QueuedJobs` (worker processes through RQ). ``task`` describes the
    job for a worker (``job_queue.Task``); ``run`` is what this process runs when it has none."""

    def get(self, key: Hashable) -> Any: ...
    def forget(self, key: Hashable) -> None: ...
    def submit(self, key: Hashable, run: Callable[[Job], Any], total: int = 0, task: Any = None,
               info: dict[str, Any] | None = None) -> Any: ...
    def cancel(self, key: Hashable) -> Any: ...
    def close(self, timeout_s: float = 10.0) -> None: ...


def check_canceller(owner: str) -> None:
    """Only the client that started a job may stop it (403 otherwise): a job is shared by everyone who asks
    for the same result, so a classmate's Stop would otherwise throw away the work the others wait for."""
    asking = str(current_client())
    if owner not in (asking, str(LOCAL)):
        raise ApiError(403, "not_your_job", "Another computer started this computation and others may be waiting "
                       "for it; only that computer can stop it. It goes on.")


class BackgroundJobs:
    def __init__(self, max_queue: int, retry_after_s: int = 2, per_client: int | None = None) -> None:
        self.max_queue = max(1, max_queue)
        self.shares = Shares(per_client)
        self.retry_after_s = retry_after_s
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._jobs: OrderedDict[Hashable, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def get(self, key: Hashable) -> Job | None:
        with self._lock:
            return self._jobs.get(key)

    def forget(self, key: Hashable) -> None:
        """Drop a finished job's record (a failed job is retried on the next request)."""
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.state in ("done", "failed", "cancelled"):
                del self._jobs[key]

    def submit(self, key: Hashable, run: Callable[[Job], Any], total: int = 0, task: Any = None,
               info: dict[str, Any] | None = None) -> Job:
        """The job for ``key``: the queued or running one, or a new one (``run`` runs it here; ``task`` is
        for a queue's workers, unused here). 429 when the queue is full."""
        with self._lock:
            if self._closed:
                raise ApiError(503, "shutting_down", "The server is shutting down.",
                               headers={"Retry-After": str(self.retry_after_s)})
            job = self._jobs.get(key)
            if job is not None and job.state in ("queued", "running"):
                return job
            client = current_client()
            why = self.shares.refusal(client)
            if why is not None:
                raise ApiError(429, "too_many_jobs", f"You already have {why.replace('computations', 'long computations')} "
                               "queued or running; wait for them before asking for more.",
                               headers={"Retry-After": str(self.retry_after_s * 5)})
            waiting = sum(1 for j in self._jobs.values() if j.state == "queued")
            if waiting >= self.max_queue:
                # 429 (too many requests), like a client over its share: the queue of long jobs is full
                raise ApiError(429, "too_many_jobs", f"{waiting} long computations are waiting already; try again shortly.",
                               headers={"Retry-After": str(self.retry_after_s * 5)})
            job = Job(key, run, total=total, client=client, info=dict(info or {}))
            self.shares.take(client)
            self._jobs[key] = job
            self._jobs.move_to_end(key)
            self._trim()
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="convscope-jobs", daemon=True)
                self._thread.start()
        self._queue.put(job)
        return job

    def cancel(self, key: Hashable) -> Job | None:
        with self._lock:
            job = self._jobs.get(key)
            if job is None:
                return None
            if job.state in ("queued", "running"):
                check_canceller(str(job.client))
            job.cancel_event.set()
            if job.state == "queued":
                self._finish(job, "cancelled")
            return job

    def _finish(self, job: Job, state: str, error: str = "") -> None:
        """The job leaves the queue or the worker (under the lock): its client's place is free again."""
        job.state = state
        job.error = error
        job.finished_at = time.monotonic()
        self.shares.release(job.client)

    def held_by(self, client: ClientId) -> int:
        """Jobs queued or running that count against ``client``."""
        with self._lock:
            return self.shares.held(client.member)

    def _trim(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.state in ("done", "failed", "cancelled")]
        for key in finished[: max(0, len(finished) - _FINISHED_KEPT)]:
            del self._jobs[key]

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                if job.state != "queued":  # cancelled while waiting
                    continue
                job.state = "running"
            try:
                job.run(job)
                state, error = "done", ""
            except WorkCancelled:
                state, error = "cancelled", ""
            except ApiError as err:
                state, error = "failed", err.message
            except Exception as err:  # a bug must not kill the worker: report it to the poller
                log.exception("background job %r failed", job.key)
                state, error = "failed", f"{type(err).__name__}: {err}"
            with self._lock:
                self._finish(job, state, error)

    def close(self, timeout_s: float = 10.0) -> None:
        """Cancel everything and stop the worker (the app's lifespan ends)."""
        with self._lock:
            self._closed = True
            for job in self._jobs.values():
                job.cancel_event.set()
            thread = self._thread
        self._queue.put(None)
        if thread is not None:
            thread.join(timeout_s)
