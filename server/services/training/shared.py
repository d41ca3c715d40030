"""Training runs on ``convscope worker`` processes through RQ, when ``CONVSCOPE_REDIS_URL`` is set (issue 26 §2).

Every replica shows every run: a thread here follows the runs listed in Redis (:mod:`server.services.training.
queued`), keeps a :class:`Run` for each, fed from the run's event stream (one blocking ``XREAD`` over all active
runs), so a browser's event stream, the run's model ``run-<id>`` and its checkpoints (files in the shared
training folder) work on whichever replica nginx picks; the event numbers are the same on every replica, so a
stream re-attaches anywhere with ``Last-Event-ID``. Pause, Resume and Stop go to the worker as words in Redis;
the limits (one run per client, ``max_runs`` in all) are one script over the runs in Redis.

A run whose worker process dies (killed, out of memory) fails with that reason: every replica looks at the
run's RQ job every ``CHECK_EVERY_S`` and the first to see it failed says so (once). A worker machine that
vanishes is seen when RQ's heartbeat expires (about a minute). Runs are never retried (they would start over).

Redis restarted without persistence (no run list, no ``queued.GENERATION``): the first replica to see it lists
the runs again from their records in the shared folder (``_seed``), as one server does after a restart. The
owner grace and ``max_run_s`` a worker applies are those of the replica that admitted the run.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from pathlib import Path
from typing import Any

from models.training.config import RunConfig
from models.training.plan import Sources
from server.errors import ApiError
from server.services.runtime.model_runtime import ModelRuntime
from server.services.training import queued, records
from server.services.training.run import Run, training_sources
from server.services.training.runs import TrainingLimits, TrainingRuns
from server.services.work.job_queue import QUEUE_NAME, failure_message, redis_errors

log = logging.getLogger("convscope.training")

CHECK_EVERY_S = 2.0  # how often a replica asks RQ whether a running run's job is still alive
BLOCK_MS = 500
ENQUEUE_GRACE_S = 30.0


class QueuedTrainingRuns(TrainingRuns):
    def __init__(self, runtime: ModelRuntime, folder: Path, limits: TrainingLimits, sources: Sources,
                 redis_url: str, job_timeout_s: int, result_ttl_s: int) -> None:
        import redis

        self.redis = redis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=5)
        self.job_timeout_s = job_timeout_s
        self.result_ttl_s = result_ttl_s
        self._cursors: dict[str, str] = {}  # run id → the last event of its stream applied here
        self._known: set[str] = set()  # runs seen in the index (one missing from it later was deleted)
        self._checked = 0.0
        self._admit_script = self.redis.register_script(queued.ADMIT)
        self._seed_script = self.redis.register_script(queued.SEED)
        self._generation: bytes | None = None  # the index's generation this replica follows (queued.GENERATION)
        super().__init__(runtime, folder, sources.data_dir, limits, sources)

    # --- following Redis -------------------------------------------------------------------------
    def _restore(self) -> None:
        try:
            self._sync()
        except Exception as exc:  # noqa: BLE001 - Redis not up yet: the thread syncs when it is
            log.warning("training runs: Redis does not answer yet (%s)", exc)

    def _follow(self, run_id: str) -> Run | None:
        found = queued.read_record(self.redis, run_id, self.folder / f"run-{run_id}")
        if found is None:
            return None
        run, last_id = found
        self._cursors[run_id] = last_id
        self._adopt(run)
        return run

    def _sync(self) -> None:
        pipe = self.redis.pipeline()  # one transaction: the index as seeded in that generation
        pipe.get(queued.GENERATION)
        pipe.hgetall(queued.INDEX)
        pipe.hgetall(queued.NAMES)
        generation, raw_index, raw_names = pipe.execute()
        if generation is None:  # Redis restarted empty (or is new): the records on disk list the runs again
            self._seed()
            return self._sync()
        reseeded = self._generation is not None and generation != self._generation
        self._generation = generation
        index = {k.decode(): json.loads(v) for k, v in raw_index.items()}
        names = {k.decode(): v.decode() for k, v in raw_names.items()}
        with self._lock:
            local = dict(self._runs)
        for run_id in index.keys() - local.keys():
            self._follow(run_id)
        for run_id, run in local.items():
            if run_id in self._known and run_id not in index:  # deleted or evicted by another replica
                with self._lock:
                    self._runs.pop(run_id, None)
                self.runtime.drop(run.model)
            elif reseeded and run_id in index:  # what was going on here is what the disk records say now
                self._catch_up(run)
            elif run_id in names and names[run_id] != run.name:
                self._renamed(run, names[run_id])
        self._known = set(index)

    def _seed(self) -> None:
        """List again, from their records in the shared training folder, the runs Redis lost (a restart without
        persistence): a run that was training as failed, interrupted, its checkpoints usable. One script, so the
        first replica to run it seeds and the others find it done. A run deleted meanwhile stays deleted: a
        deletion renames its folder away before it touches Redis, and a folder gone by now is taken out again."""
        records.leftovers(self.folder)
        generation = secrets.token_hex(8)
        args: list[Any] = [generation, queued.PREFIX, queued.ENDED_TTL_S]
        runs, changed = {}, set()
        for path in sorted(self.folder.glob("run-*")) if self.folder.is_dir() else []:
            run = records.read(path)
            if run is None:
                continue  # being started (its record comes next) or unreadable: not a run to list again
            was_active = run.active
            if records.reopen(run, "the job queue's Redis lost its runs"):
                changed.add(run.id)
            runs[run.id] = run
            args += [run.id, queued.record_json(run, "0-0"), queued.summary(run), int(was_active)]
        answer = self._seed_script(keys=[queued.GENERATION, queued.INDEX], args=args)
        if answer[0].decode() != generation:
            return  # another replica seeded first
        for run_id in (raw.decode() for raw in answer[1:]):
            run = runs[run_id]
            if not run.folder.is_dir():  # deleted while this replica read the disk
                queued.forget(self.redis, run_id)
            elif run_id in changed:
                records.save(run)
        log.warning("training runs: Redis had no run list (restarted without persistence?); %d run(s) listed "
                    "again from %s", len(answer) - 1, self.folder)

    def _watchdog(self) -> None:
        """Follow the runs in Redis until the service closes; a Redis outage is waited out."""
        while not self._closed.is_set():
            try:
                self._sync()
                self._tail()
                self._keep_owners_seen()
                if time.monotonic() - self._checked > CHECK_EVERY_S:
                    self._checked = time.monotonic()
                    for run in self.list():
                        if run.active:
                            self._check_job(run)
            except Exception as exc:  # noqa: BLE001 - Redis away, a bad record: say so, try again
                log.warning("training runs: following Redis failed (%s)", exc)
                self._closed.wait(1.0)

    def _tail(self) -> None:
        streams = {queued.key("events", run.id): self._cursors.get(run.id, "0-0") for run in self.list() if run.active}
        if not streams:
            self._closed.wait(BLOCK_MS / 1000)
            return
        for stream, entries in self.redis.xread(streams, block=BLOCK_MS) or []:
            run_id = stream.decode().rsplit(":", 1)[1]
            with self._lock:
                run = self._runs.get(run_id)
            for entry, fields in entries:
                number = int(fields.get(b"s", 0))
                if run is not None and number > run.seq + 1:  # fell behind the capped stream: reread the record
                    self._catch_up(run)
                    break
                if run is not None and number == run.seq + 1:
                    run.record(json.loads(fields[b"e"]))
                self._cursors[run_id] = entry.decode()

    def _catch_up(self, run: Run) -> None:
        """Bring ``run`` (which streams may be reading) up to its record; its streams then get the whole run."""
        found = queued.read_record(self.redis, run.id, run.folder)
        if found is None:
            return
        fresh, last_id = found
        with run.lock:
            for name in ("state", "message", "info", "history", "points", "checkpoints", "latest", "seq", "finished"):
                setattr(run, name, getattr(fresh, name))
            run.events.clear()  # a stream re-attaching gets the whole run (Run.since says so)
            run.changed.notify_all()
        self._cursors[run.id] = last_id

    def _keep_owners_seen(self) -> None:
        for run in self.list():
            if run.active and run.attached > 0:
                self._seen(run)

    def _seen(self, run: Run) -> None:
        self.redis.set(queued.key("seen", run.id), time.time(), ex=int(self.limits.grace_s * 2 + 60))

    def _check_job(self, run: Run) -> None:
        """End a run whose RQ job failed (its worker died) or vanished, with the reason."""
        from rq.exceptions import NoSuchJobError
        from rq.job import Job

        try:
            job = Job.fetch(queued.rq_job_id(run.id), connection=self.redis)
        except NoSuchJobError:
            if time.time() - run.created < ENQUEUE_GRACE_S:
                return  # being put on the queue right now (its replica writes the run first, then the job)
            why = "its job is no longer in the queue (Redis lost it)"
        else:
            status = getattr(job.get_status(refresh=False), "value", "")
            if status in ("queued", "deferred", "scheduled", "started", "created", "rate_limited",
                          "ready_to_enqueue"):
                return
            if status in ("stopped", "canceled"):
                why = "its job was cancelled"
            elif status == "failed":
                latest = job.latest_result()
                why = failure_message(getattr(latest, "exc_string", "") or "", "training it", retried=False)
            else:  # finished without publishing an end: the record says what it had
                why = "its worker ended it without a word"
        message = f"Interrupted: {why}; " + (f"its checkpoints up to {run.checkpoint_names()[-1]} are kept and "
                                              "usable." if run.checkpoint_names() else "it had no checkpoint yet.")
        if queued.end_run(self.redis, run.id, run.folder, {"type": "failed", "message": message}):
            log.warning("training run %s: %s", run.id, message)

    # --- the service's decisions, through Redis (down: 503 with Retry-After) -------------------------
    def get(self, run_id: str, client: str | None = None) -> Run:
        with self._lock:
            known = run_id in self._runs
        with redis_errors():
            if not known:
                self._follow(run_id)  # started on another replica a moment ago
            run = super().get(run_id, client)
            if client is not None and client == run.owner and run.active:
                self._seen(run)
        return run

    def pause(self, run_id: str, client: str) -> Run:
        with redis_errors():
            return super().pause(run_id, client)

    def resume(self, run_id: str, client: str) -> Run:
        with redis_errors():
            return super().resume(run_id, client)

    def stop(self, run_id: str, client: str) -> Run:
        with redis_errors():
            return super().stop(run_id, client)

    def rename(self, run_id: str, name: str, client: str) -> Run:
        with redis_errors():
            return super().rename(run_id, name, client)

    def delete(self, run_id: str, client: str) -> None:
        with redis_errors():
            super().delete(run_id, client)

    def _admit(self, run: Run, active: list[Run]) -> None:
        answer = self._admit_script(keys=[queued.ACTIVE], args=[run.id, run.owner, self.limits.per_client,
                                                                 self.limits.max_runs])
        if answer == 0:
            return
        going = [r for r in active if answer == 2 or r.owner == run.owner]
        code = "run_in_progress" if answer == 1 else "training_busy"
        message = ("You have a training run going already (one per computer); stop it or wait for it to end."
                   if answer == 1 else f"The workers train {self.limits.max_runs} run(s) at once and that many are "
                   "going; try again when one ends.")
        raise ApiError(429, code, message, {"Retry-After": str(self._retry_after(going))})

    def start(self, config: RunConfig, name: str | None, client: str) -> Run:
        with redis_errors():
            for run in self.list():  # a run whose worker died and that nobody looked at must not hold the limit
                if run.active:
                    self._check_job(run)
            return super().start(config, name, client)

    def _launch(self, run: Run) -> None:
        from rq import Queue

        queued.Publisher(self.redis, run).save(first=True)
        self._cursors[run.id] = "0-0"
        self._seen(run)
        try:
            Queue(QUEUE_NAME, connection=self.redis).enqueue(
                "server.services.work.job_queue.run_task", "training",
                {"run_id": run.id, "classes": list(self.runtime.registry.get(run.model).categories),
                 "grace_s": self.limits.grace_s, "max_run_s": self.limits.max_run_s},
                job_id=queued.rq_job_id(run.id), job_timeout=self.job_timeout_s, result_ttl=self.result_ttl_s,
                failure_ttl=self.result_ttl_s, description=f"training run {run.id}")
        except Exception as exc:  # noqa: BLE001 - the run fails with the reason, the limit is free again
            queued.end_run(self.redis, run.id, run.folder,
                           {"type": "failed", "message": f"the job queue did not take it ({exc})"})

    def _send(self, run: Run, word: str) -> None:
        if not run.active:
            raise ApiError(409, "run_not_running", f"Run {run.id} is {run.state}; there is nothing to {word}.")
        pipe = self.redis.pipeline()
        pipe.rpush(queued.key("control", run.id), word)
        pipe.expire(queued.key("control", run.id), self.job_timeout_s)
        pipe.execute()

    def _stop(self, run: Run) -> None:
        if not run.active:
            return
        if run.state == "queued":  # no worker has it yet: it never will
            from rq.exceptions import InvalidJobOperation, NoSuchJobError
            from rq.job import Job

            try:
                Job.fetch(queued.rq_job_id(run.id), connection=self.redis).cancel()
            except (NoSuchJobError, InvalidJobOperation):
                pass
            if queued.end_run(self.redis, run.id, run.folder, {"type": "stopped"}):
                return
        self._send(run, "stop")

    def _renamed(self, run: Run, name: str) -> None:
        super()._renamed(run, name)
        self.redis.hset(queued.NAMES, run.id, name)

    def _remove(self, run: Run) -> None:
        self._stop(run)
        records.remove(run.folder)  # first: from now on no replica lists it again, even if this one dies here
        queued.forget(self.redis, run.id)
        with self._lock:
            self._runs.pop(run.id, None)
        self.runtime.drop(run.model)

    def prepare(self) -> None:
        return None  # the workers are ready or not; nothing to start here

    @property
    def ready(self) -> bool:
        """A worker listens on the queue."""
        from rq import Queue, Worker

        with redis_errors():
            return Worker.count(connection=self.redis, queue=Queue(QUEUE_NAME, connection=self.redis)) > 0

    def close(self) -> None:
        """Stop following Redis; the runs go on on their workers (another replica, or this one restarted,
        shows them)."""
        self._closed.set()
        self._watch.join(timeout=5)
        self._spawner.close()
        for run in self.list():
            self.runtime.drop(run.model)
        with self._lock:
            self._runs.clear()
        self.redis.close()


def training_runs(runtime: ModelRuntime, settings: Any) -> TrainingRuns:
    """The runs in worker children of this process, or (Redis set and the job queue on) on RQ workers."""

    limits = TrainingLimits.from_settings(settings)
    use_queue = settings.job_queue if settings.job_queue is not None else bool(settings.redis_url)
    if not (use_queue and settings.redis_url):
        return TrainingRuns(runtime, records.training_folder(settings), settings.data_dir, limits,
                            training_sources(settings))
    if settings.training_dir is None:
        log.warning("training runs go to the job queue, but CONVSCOPE_TRAINING_DIR is not set: every replica and "
                    "worker must share the training folder, or checkpoints are not found")
    return QueuedTrainingRuns(runtime, records.training_folder(settings), limits, training_sources(settings),
                              settings.redis_url, settings.queue_job_timeout_s, settings.queue_result_ttl_s)
