"""Training runs through Redis and RQ (issue 26 §2): the keys a run has there, how an event is published to
every replica, and the RQ task a ``convscope worker`` runs (``job_queue.TASKS["training"]``).

A run in Redis:
- ``INDEX`` (hash, run id → its owner, state and creation time) lists the runs every replica shows;
- ``record:<id>``: the run as a restarted page sees it (:mod:`server.services.training.records`) with the id of
  the last event it includes; rewritten at each epoch, checkpoint and state change and every ``RECORD_EVERY_S``;
- ``events:<id>``: a Redis stream of the run's events (points with filters and maps, epochs, checkpoints),
  capped at ``STREAM_LEN`` (a replica that falls behind further starts again from the record);
- ``control:<id>``: pause / resume / stop words from any replica, for the worker; ``seen:<id>``: when the owner
  was last seen by any replica (a run whose owner left for ``grace_s`` stops, as in one process);
- ``ACTIVE`` (hash, run id → owner): the runs that count against the limits, checked and taken in one script.

Checkpoints are files in the training folder (``CONVSCOPE_TRAINING_DIR``), which every replica and worker
mounts: a checkpoint budget of hundreds of MB belongs on a disk, not in Redis's memory next to the sessions.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from server.services.training import records
from server.services.training.run import Run

PREFIX = "convscope:training"
INDEX = f"{PREFIX}:index"
ACTIVE = f"{PREFIX}:active"
NAMES = f"{PREFIX}:names"  # run id → the name it was renamed to (any replica)
STREAM_LEN = 600  # events kept per run's stream: about four minutes of points
RECORD_EVERY_S = 2.0
ENDED_TTL_S = 7 * 24 * 3600
ENDED_STREAM_TTL_S = 600  # a finished run's stream is kept this long (replicas following it catch up in a second)

# the limits, atomically for every replica: 1 = the owner has a run going, 2 = max_runs are going, 0 = taken
ADMIT = """
local all = redis.call('HGETALL', KEYS[1])
local total, mine = 0, 0
for i = 1, #all, 2 do
  total = total + 1
  if all[i + 1] == ARGV[2] then mine = mine + 1 end
end
if mine >= tonumber(ARGV[3]) then return 1 end
if total >= tonumber(ARGV[4]) then return 2 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 0
"""


def key(kind: str, run_id: str) -> str:
    return f"{PREFIX}:{kind}:{run_id}"


def rq_job_id(run_id: str) -> str:
    return f"cs-training-{run_id}"


class Publisher:
    """Applies a run's events to its :class:`Run` here and publishes them to every replica (the stream, and the
    record at the moments it changes), in order, from one place at a time (the worker; a replica only when the
    worker is gone)."""

    def __init__(self, redis: Any, run: Run, last_id: str = "0-0") -> None:
        self.redis = redis
        self.run = run
        self.last_id = last_id
        self._saved = time.monotonic()
        self._lock = threading.Lock()
        self.deleted = False  # the run was deleted meanwhile (its record is gone): publish nothing more

    def __call__(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.run.record(event)
            if self.deleted:
                return
            if not self.run.active:  # ended: its limit is free before any replica hears of the end
                self.redis.hdel(ACTIVE, self.run.id)
            fields = {"e": json.dumps(event, separators=(",", ":")), "s": self.run.seq}  # its number in the run
            entry = self.redis.xadd(key("events", self.run.id), fields, maxlen=STREAM_LEN, approximate=True)
            self.last_id = entry.decode() if isinstance(entry, bytes) else str(entry)
            if event["type"] in records.SAVED_EVENTS or time.monotonic() - self._saved > RECORD_EVERY_S:
                self.save()

    def save(self, first: bool = False) -> None:
        if not first and not self.redis.exists(key("record", self.run.id)):
            self.deleted = True
            self.redis.delete(key("events", self.run.id))
            return
        record = {**records.as_record(self.run), "stream_id": self.last_id}
        summary = {"owner": self.run.owner, "state": self.run.state, "created": self.run.created}
        pipe = self.redis.pipeline()
        pipe.set(key("record", self.run.id), json.dumps(record, separators=(",", ":")))
        pipe.hset(INDEX, self.run.id, json.dumps(summary))
        if not self.run.active:
            pipe.hdel(ACTIVE, self.run.id)
            pipe.expire(key("events", self.run.id), ENDED_STREAM_TTL_S)  # the record says it all from now on
        pipe.execute()
        self._saved = time.monotonic()
        records.save(self.run, record)  # the shared folder keeps it too


def read_record(redis: Any, run_id: str, folder: Path) -> tuple[Run, str] | None:
    """The run as its record in Redis says, and the id of the last event the record includes."""
    raw = redis.get(key("record", run_id))
    if raw is None:
        return None
    record = json.loads(raw)
    run = records.restore(record, folder)
    name = redis.hget(NAMES, run_id)
    if name is not None:
        run.name = name.decode()
    return run, record.get("stream_id", "0-0")


def events_after(redis: Any, run_id: str, last_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The run's events after ``last_id`` still in its stream."""
    for entry, fields in redis.xrange(key("events", run_id), min=last_id, max="+"):
        entry = entry.decode()
        if entry != last_id:
            yield entry, json.loads(fields[b"e"])


def end_run(redis: Any, run_id: str, folder: Path, event: dict[str, Any]) -> bool:
    """Publish ``event`` (failed or stopped) for a run whose worker is gone, once among all replicas."""
    if not redis.set(key("ended", run_id), 1, nx=True, ex=ENDED_TTL_S):
        return False
    found = read_record(redis, run_id, folder)
    if found is None:
        redis.hdel(ACTIVE, run_id)
        return False
    run, last_id = found
    for entry, earlier in events_after(redis, run_id, last_id):  # bring the record up to the stream
        run.record(earlier)
        last_id = entry
    if run.active:
        Publisher(redis, run, last_id)(event)
    redis.hdel(ACTIVE, run_id)
    return True


# --- the worker's side ---------------------------------------------------------------------------------

def _control_words(redis: Any, publish: Publisher, grace_s: float, max_run_s: float,
                   finished: threading.Event) -> Iterator[str]:
    """Pause / resume / stop words for the worker's :class:`Control`; ends (a stop) when the owner has not been
    seen by any replica for ``grace_s``, when the run has had ``max_run_s``, or when it was deleted."""
    run = publish.run
    while not finished.is_set() and not publish.deleted:
        item = redis.blpop([key("control", run.id)], timeout=1)
        if item is not None:
            yield item[1].decode() + "\n"
            continue
        seen = redis.get(key("seen", run.id))
        if seen is None or time.time() - float(seen) > grace_s or time.time() - run.created > max_run_s:
            return


def training_task(context: Any, params: dict[str, Any], progress: Any) -> None:
    """One training run on a worker: the one training loop (``worker._run``), its events published to Redis,
    its checkpoints written to the shared training folder."""
    from server.services.training.run import training_sources
    from server.services.training.runs import training_device
    from server.services.training.worker import Control, _run

    settings = context.settings
    redis = progress.rq_job.connection
    run_id = params["run_id"]
    folder = records.training_folder(settings) / f"run-{run_id}"
    found = read_record(redis, run_id, folder)
    if found is None or not found[0].active:
        return None  # deleted or stopped before this worker took it
    run, last_id = found
    folder.mkdir(parents=True, exist_ok=True)
    publish = Publisher(redis, run, last_id)
    finished = threading.Event()
    control = Control(_control_words(redis, publish, settings.training_client_grace_s, settings.training_max_run_s,
                                     finished))
    job = {"config": run.config.as_json(), "run_dir": str(folder), "classes": params.get("classes"),
           "sources": training_sources(settings).as_json(), "threads": settings.training_threads,
           "device": training_device(context.runtime), "point_interval_s": settings.training_point_interval_s,
           "maps_interval_s": settings.training_maps_interval_s}
    try:
        ending = _run(job, control, lambda kind, **fields: publish({"type": kind, **fields}))
        publish({"type": ending})
    except Exception as exc:  # noqa: BLE001 - any failure ends the run with its reason, for the page
        publish({"type": "failed", "message": f"{type(exc).__name__}: {exc}"})
    finally:
        finished.set()
        for partial in folder.glob(".*.pt.partial"):
            partial.unlink(missing_ok=True)
    return None
