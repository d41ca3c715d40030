"""Background jobs on worker processes through RQ, when ``CONVSCOPE_REDIS_URL`` is set (issue 26 §2).

The services submit a job as before (:class:`server.services.work.background_jobs.BackgroundJobs`'s
``get/submit/cancel/forget``) and add a :class:`Task`: a name and plain parameters a worker process
(``convscope worker``, on this machine or any other that reaches the same Redis) can run without the
replica's memory. :class:`QueuedJobs` puts such jobs on an RQ queue; a job without a task (a model only this
replica has: a dropped-in upload) runs in the replica's own background worker, as without Redis.

Why RQ (over Celery, Dramatiq, arq, Ray): each job here is one long, CPU/GPU-bound computation whose page
polls it, so we need per-job progress readable by any replica (RQ's ``job.meta``), cancellation of a
queued job and of a running one (``job.cancel()``; ``send_stop_job_command`` ends the process computing it,
and a stopped job is never retried), per-client limits inside the queue itself (RQ's ``RateLimit``: one
client's jobs beyond its share wait without holding up the others'), and workers that are plain processes
started anywhere with the Redis URL (a GPU machine runs ``convscope worker --queue gpu``). RQ's forking
worker runs each job in a child ("work horse"): when that process dies (killed, out of memory), the
worker sees it at once, and the job is retried once, then fails with that reason. A worker killed whole
(machine gone) is found by RQ's heartbeat registry: its job is retried or failed after the heartbeat
expires (about a minute), never left "running". Dramatiq redelivers dead workers' jobs but has no progress
or cancellation; Celery's Redis transport redelivers only after a visibility timeout longer than any job;
arq and Ray fit asyncio services and clusters, not a pool of plain torch processes.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import math
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from server.errors import ApiError
from server.services.work.background_jobs import BackgroundJobs, Job, check_canceller
from server.services.work.cancel import WorkCancelled, current_client
from server.services.work.clients import LOCAL

log = logging.getLogger("convscope.jobs")

QUEUE_NAME = "convscope"
# task name → "module:function" run by the worker: function(context, params, progress) → the result the
# replica installs (pickled by RQ into Redis; kept ``result_ttl_s``)
TASKS = {
    "featurevis": "server.services.channels.feature_vis:featurevis_task",
    "examples": "server.services.channels.examples:examples_task",
    "sanity": "server.services.trust.sanity:sanity_task",
}
SHAREABLE_FAMILIES = frozenset({"bundled", "torchvision", "timm", "file"})  # models every worker can build


@dataclass(frozen=True)
class Task:
    """What a worker runs: ``TASKS[name](context, params, progress)``. Params are plain values and arrays."""

    name: str
    params: dict[str, Any]
    queue: str = QUEUE_NAME


@dataclass
class QueuedJob:
    """An RQ job as the services read a :class:`Job`: state, progress, info, error, and the result."""

    key: Hashable
    state: str
    done: int = 0
    total: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    fetch_result: Callable[[], Any] | None = None

    @property
    def result(self) -> Any:
        """The task's return value once ``done`` (None before, or once Redis dropped it)."""
        return self.fetch_result() if self.state == "done" and self.fetch_result is not None else None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "progress": {"done": self.done, "total": self.total}, **self.info}
        if self.error:
            out["error"] = self.error
        return out


_STATES = {"queued": "queued", "deferred": "queued", "scheduled": "queued", "rate_limited": "queued",
           "created": "queued", "ready_to_enqueue": "queued", "started": "running", "finished": "done",
           "failed": "failed", "stopped": "cancelled", "canceled": "cancelled"}


def cancel_key(rq_job_id: str) -> str:
    return f"convscope:job-cancel:{rq_job_id}"


def job_id(key: Hashable) -> str:
    """The same job key gives the same RQ job id on every replica (so they share one job)."""
    return "cs-" + hashlib.sha256(repr(key).encode()).hexdigest()[:40]


def failure_message(exc_string: str) -> str:
    """A person's sentence for why a queued job failed."""
    if "Work-horse terminated unexpectedly" in exc_string:
        signal = exc_string.split("(signal ", 1)[1].split(")", 1)[0] if "(signal " in exc_string else "?"
        return (f"the worker process computing it died (signal {signal}), again after one retry; "
                "asking again starts it anew")
    if "AbandonedJobError" in exc_string:
        return "the worker computing it went away (no heartbeat); asking again starts it anew"
    if "JobTimeoutException" in exc_string:
        return "it ran longer than the job time limit (CONVSCOPE_QUEUE_JOB_TIMEOUT_S)"
    last = [line for line in exc_string.strip().splitlines() if line.strip()]
    return last[-1] if last else "the worker reported no reason"


class QueuedJobs:
    """``BackgroundJobs``'s interface over an RQ queue; jobs without a :class:`Task` run in ``local``."""

    def __init__(self, redis_url: str, local: BackgroundJobs, *, max_queue: int, per_client: int,
                 per_client_running: int = 1, job_timeout_s: int = 3600, result_ttl_s: int = 3600,
                 retry_after_s: int = 2) -> None:
        import redis
        from rq import Queue

        self.redis = redis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=5)
        self.local = local
        self.max_queue = max(1, max_queue)
        self.per_client = max(1, per_client)
        self.per_client_running = max(1, min(per_client_running, self.per_client))
        self.job_timeout_s = job_timeout_s
        self.result_ttl_s = result_ttl_s
        self.retry_after_s = retry_after_s
        self._queues: dict[str, Queue] = {}
        self._local_keys: set[Hashable] = set()
        self._lock = threading.Lock()

    def _queue(self, name: str) -> Any:
        from rq import Queue

        with self._lock:
            if name not in self._queues:
                self._queues[name] = Queue(name, connection=self.redis)
            return self._queues[name]

    def _fetch(self, key: Hashable) -> Any | None:
        from rq.exceptions import NoSuchJobError
        from rq.job import Job as RqJob

        try:
            return RqJob.fetch(job_id(key), connection=self.redis)
        except NoSuchJobError:
            return None

    def _view(self, key: Hashable, job: Any) -> QueuedJob:
        status = job.get_status(refresh=False)
        state = _STATES.get(getattr(status, "value", str(status)), "queued")
        meta = job.meta or {}
        error = ""
        outcome = meta.get("outcome")
        if state == "done" and isinstance(outcome, dict) and outcome.get("state") in ("failed", "cancelled"):
            state, error = outcome["state"], outcome.get("error", "")  # an ApiError or WorkCancelled in the task
        elif state == "failed":
            latest = job.latest_result()
            error = failure_message(getattr(latest, "exc_string", "") or "")
        info = dict(meta.get("info", {}))
        if meta.get("retried"):
            info["retried"] = meta["retried"]
        if state == "queued":  # say so when no worker listens: the job waits for one to start
            from rq import Worker

            info["workers"] = Worker.count(connection=self.redis, queue=self._queue(job.origin))
        return QueuedJob(key, state, int(meta.get("done", 0)), int(meta.get("total", 0)), info,
                         error, fetch_result=job.return_value)

    def get(self, key: Hashable) -> Job | QueuedJob | None:
        with self._lock:
            local = key in self._local_keys
        if local:
            return self.local.get(key)
        with _redis_errors():
            job = self._fetch(key)
            return None if job is None else self._view(key, job)

    def forget(self, key: Hashable) -> None:
        with self._lock:
            local = key in self._local_keys
        if local:
            self.local.forget(key)
            return
        with _redis_errors():
            job = self._fetch(key)
            if job is not None and self._view(key, job).state in ("done", "failed", "cancelled"):
                job.delete()

    def submit(self, key: Hashable, run: Callable[[Job], Any], total: int = 0, task: Task | None = None,
               info: dict[str, Any] | None = None) -> Job | QueuedJob:
        if task is None:
            with self._lock:
                self._local_keys.add(key)
            return self.local.submit(key, run, total, info=info)
        from rq import RateLimit, Retry
        from rq.rate_limit import RateLimitRegistry

        client = current_client()
        with _redis_errors():
            existing = self._fetch(key)
            if existing is not None:
                view = self._view(key, existing)
                if view.state in ("queued", "running", "done"):
                    return view
                existing.delete()
            queue = self._queue(task.queue)
            if queue.count >= self.max_queue:
                raise ApiError(429, "too_many_jobs", f"{queue.count} long computations are waiting already; "
                               "try again shortly.", {"Retry-After": str(self.retry_after_s * 5)})
            mine = RateLimitRegistry(f"convscope-client:{client}", self.redis)
            held = mine.get_allowed_job_count() + mine.get_rate_limited_job_count()
            if held >= self.per_client:
                raise ApiError(429, "too_many_jobs_for_client",
                               f"This address has {held} long computations waiting or running, its share; "
                               "try again when one is done.", {"Retry-After": str(self.retry_after_s * 5)})
            self.redis.delete(cancel_key(job_id(key)))
            job = queue.enqueue(
                f"{__name__}.run_task", task.name, task.params, job_id=job_id(key),
                meta={"done": 0, "total": total, "info": dict(info or {}), "client": str(client)},
                retry=Retry(max=1), job_timeout=self.job_timeout_s, result_ttl=self.result_ttl_s,
                failure_ttl=self.result_ttl_s, description=f"{task.name} {str(key)[:200]}",
                rate_limit=RateLimit(f"convscope-client:{client}", self.per_client_running))
            return self._view(key, job)

    def cancel(self, key: Hashable) -> Job | QueuedJob | None:
        with self._lock:
            local = key in self._local_keys
        if local:
            return self.local.cancel(key)
        from rq.command import send_stop_job_command
        from rq.exceptions import InvalidJobOperation, NoSuchJobError

        with _redis_errors():
            job = self._fetch(key)
            if job is None:
                return None
            if self._view(key, job).state not in ("queued", "running"):
                return self._view(key, job)
            check_canceller(str((job.meta or {}).get("client", LOCAL)))
            # the task also reads this flag (at its start and with its progress): no race with a worker taking it
            self.redis.set(cancel_key(job.id), 1, ex=self.result_ttl_s)
            try:
                if self._view(key, job).state == "queued":
                    job.cancel()
                job.get_status(refresh=True)
                if self._view(key, job).state == "running":
                    send_stop_job_command(self.redis, job.id)
            except (InvalidJobOperation, NoSuchJobError) as exc:  # it moved on meanwhile: the flag stops it
                log.info("cancelling job %s: %s", job.id, exc)
            job.get_status(refresh=True)
            return self._view(key, job)

    def close(self, timeout_s: float = 10.0) -> None:
        self.local.close(timeout_s)
        self.redis.close()


class _redis_errors:
    """Redis down → 503 with Retry-After, like the sessions."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        from redis.exceptions import RedisError

        if exc is not None and isinstance(exc, RedisError):
            log.warning("job queue (Redis) failed: %s", exc)
            raise ApiError(503, "jobs_unavailable", "The job queue (Redis) does not answer; try again shortly.",
                           {"Retry-After": "2"}) from exc
        return False


def background_jobs(settings: Any) -> BackgroundJobs | QueuedJobs:
    """This process's background worker, or (Redis set, ``job_queue`` not False) the queue to the workers."""
    local = BackgroundJobs(settings.channel_jobs_queue, per_client=settings.channel_jobs_per_client)
    use_queue = settings.job_queue if settings.job_queue is not None else bool(settings.redis_url)
    if not use_queue or not settings.redis_url:
        return local
    return QueuedJobs(settings.redis_url, local, max_queue=settings.channel_jobs_queue,
                      per_client=settings.channel_jobs_per_client,
                      per_client_running=settings.queue_jobs_running_per_client,
                      job_timeout_s=settings.queue_job_timeout_s, result_ttl_s=settings.queue_result_ttl_s)


# --- the worker's side ---------------------------------------------------------------------------------

class TaskProgress:
    """The ``job`` a task reports to, in the worker: progress goes to the RQ job's meta (at most every
    ``interval_s``, and always the last report), readable by every replica."""

    def __init__(self, rq_job: Any, interval_s: float = 0.25) -> None:
        self.rq_job = rq_job
        self.interval_s = interval_s
        self.cancel_event = threading.Event()  # set once a replica asked to cancel (see progress)
        self._saved_at = -math.inf
        meta = rq_job.meta
        self.done, self.total = int(meta.get("done", 0)), int(meta.get("total", 0))
        self.info: dict[str, Any] = dict(meta.get("info", {}))

    def progress(self, done: int, total: int | None = None, **info: Any) -> None:
        """Report progress; raises :class:`WorkCancelled` once a replica asked to cancel (a step boundary)."""
        self.done = done
        if total is not None:
            self.total = total
        self.info.update(info)
        now = time.monotonic()
        if now - self._saved_at >= self.interval_s or (self.total and done >= self.total):
            self.save()
            self._saved_at = now
            if self.cancel_requested():
                self.cancel_event.set()
                raise WorkCancelled("the job was cancelled")

    def cancel_requested(self) -> bool:
        return bool(self.rq_job.connection.exists(cancel_key(self.rq_job.id)))

    def save(self) -> None:
        self.rq_job.meta.update({"done": self.done, "total": self.total, "info": self.info})
        self.rq_job.save_meta()


@dataclass
class WorkerContext:
    """What tasks need in a worker process: the settings and a model runtime (models load on first use)."""

    settings: Any
    runtime: Any

    @classmethod
    def from_settings(cls, settings: Any) -> WorkerContext:
        from models.models_file import app_registry
        from server.services.runtime import ArchitectureCatalog, ModelRuntime
        from server.settings import resolve_device

        registry = app_registry(settings.models_file, settings.import_cache_dir)
        runtime = ModelRuntime(resolve_device(settings.device), settings.max_loaded_models,
                               ArchitectureCatalog(settings.architecture_cache_bytes), settings.loaded_models_bytes,
                               registry)
        return cls(settings, runtime)


_context: list[WorkerContext] = []  # this worker process's context (set once by `convscope worker`)


def set_worker_context(context: WorkerContext) -> None:
    _context[:] = [context]


def run_task(name: str, params: dict[str, Any]) -> Any:
    """What RQ runs in the work horse: the named task, with progress in the job's meta. A task's refusal
    (an ApiError) or cancellation is an outcome, not a crash: it is not retried."""
    from rq import get_current_job

    rq_job = get_current_job()
    if not _context:
        from server.settings import Settings

        set_worker_context(WorkerContext.from_settings(Settings()))
    module, function = TASKS[name].split(":")
    task = getattr(importlib.import_module(module), function)
    progress = TaskProgress(rq_job)
    if rq_job.retries_left is not None and rq_job.retries_left < 1:
        rq_job.meta["retried"] = 1
    try:
        if progress.cancel_requested():
            raise WorkCancelled("the job was cancelled")
        result = task(_context[0], params, progress)
    except WorkCancelled:
        rq_job.meta["outcome"] = {"state": "cancelled"}
        progress.save()
        return None
    except ApiError as err:
        rq_job.meta["outcome"] = {"state": "failed", "error": err.message}
        progress.save()
        return None
    progress.save()
    return result
