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
- ``ACTIVE`` (hash, run id → owner): the runs that count against the limits, checked and taken in one script;
- ``GENERATION``: set when the index was seeded. A Redis restarted without persistence has none: the first
  replica to see that lists the runs again from their records on the shared disk (``SEED``, one script, so two
  replicas doing it at once seed once), a run that was training as interrupted, as one server does after a
  restart; ``ended:<id>`` then stops its worker, if it still trains, from writing over that.

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


# the index seeded from the disk records, once among all replicas. KEYS: GENERATION, INDEX; ARGV: the new generation,
# the key prefix, the ended keys' TTL, then per run: id, record, summary, ended ("1": it was training). Answers
# the generation in force, then the ids this call listed (none when another replica seeded first).
SEED = """
local current = redis.call('GET', KEYS[1])
if current then return {current} end
local answer = {ARGV[1]}
for i = 4, #ARGV, 4 do
  local id = ARGV[i]
  if redis.call('HSETNX', KEYS[2], id, ARGV[i + 2]) == 1 then
    redis.call('SET', ARGV[2] .. ':record:' .. id, ARGV[i + 1])
    if ARGV[i + 3] == '1' then redis.call('SET', ARGV[2] .. ':ended:' .. id, 1, 'EX', ARGV[3]) end
    answer[#answer + 1] = id
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return answer
"""

# a run's record and index entry, unless the run was deleted (its record is gone) or ended by a replica
# (``ended:<id>``, not by this publisher). KEYS: record, INDEX, ACTIVE, events, ended; ARGV: id, record, summary,
# first, ending, over ("1": the run has ended), the stream's TTL once over. Answers 1 when written.
SAVE = """
if ARGV[4] == '1' then
  redis.call('DEL', KEYS[5])  -- a new run: an ended key can only be a re-seed's that read its first record
else
  if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
  if ARGV[5] ~= '1' and redis.call('EXISTS', KEYS[5]) == 1 then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
if ARGV[6] == '1' then
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('EXPIRE', KEYS[4], ARGV[7])
end
return 1
"""
GENERATION = f"{PREFIX}:generation"


def key(kind: str, run_id: str) -> str:
    return f"{PREFIX}:{kind}:{run_id}"


def rq_job_id(run_id: str) -> str:
    return f"cs-training-{run_id}"


def summary(run: Run) -> str:
    """The run's entry in ``INDEX``."""
    return json.dumps({"owner": run.owner, "state": run.state, "created": run.created})


def record_json(run: Run, last_id: str) -> str:
    return json.dumps({**records.as_record(run), "stream_id": last_id}, separators=(",", ":"))


def forget(redis: Any, run_id: str) -> None:
    """Take a run out of Redis (every replica drops it at its next look at the index)."""
    pipe = redis.pipeline()
    for listing in (INDEX, NAMES, ACTIVE):
        pipe.hdel(listing, run_id)
    pipe.delete(*(key(kind, run_id) for kind in ("record", "events", "seen")))
    pipe.execute()


class Publisher:
    """Applies a run's events to its :class:`Run` here and publishes them to every replica (the stream, and the
    record at the moments it changes), in order, from one place at a time (the worker; a replica only when the
    worker is gone)."""

    def __init__(self, redis: Any, run: Run, last_id: str = "0-0", ending: bool = False) -> None:
        self.redis = redis
        self.run = run
        self.last_id = last_id
        self.ending = ending  # a replica ending the run for its vanished worker (end_run)
        self._saved = time.monotonic()
        self._lock = threading.Lock()
        self._save = redis.register_script(SAVE)
        # the run was deleted (its record is gone) or ended by a replica meanwhile: publish nothing more
        self.deleted = False

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
        record = record_json(self.run, self.last_id)
        written = self._save(
            keys=[key("record", self.run.id), INDEX, ACTIVE, key("events", self.run.id), key("ended", self.run.id)],
            args=[self.run.id, record, summary(self.run), int(first), int(self.ending), int(not self.run.active),
                  ENDED_STREAM_TTL_S])
        if not written:
            self.deleted = True
            if not self.redis.exists(key("record", self.run.id)):
                self.redis.delete(key("events", self.run.id))
            return
        self._saved = time.monotonic()
        records.save(self.run, json.loads(record))  # the shared folder keeps it too


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
        Publisher(redis, run, last_id, ending=True)(event)
    redis.hdel(ACTIVE, run_id)
    return True


# --- the worker's side ---------------------------------------------------------------------------------

def _control_words(redis: Any, publish: Publisher, grace_s: float, max_run_s: float,
                   finished: threading.Event) -> Iterator[str]:
    """Pause / resume / stop words for the worker's :class:`Control`; ends (a stop) when the owner has not been
    seen by any replica for ``grace_s``, when the run has had ``max_run_s``, or when it was deleted or ended by a
    replica (its ``Publisher`` says so). A Redis that is away is waited for (a restart empty ends the run: its
    owner was seen by no replica since)."""
    from redis.exceptions import ConnectionError as RedisAway
    from redis.exceptions import TimeoutError as RedisSlow

    run = publish.run
    while not finished.is_set() and not publish.deleted:
        try:
            item = redis.blpop([key("control", run.id)], timeout=1)
            seen = redis.get(key("seen", run.id)) if item is None else b""
        except (RedisAway, RedisSlow):  # Redis restarting: its words (and the owner's) wait; not its time
            finished.wait(1.0)
            if time.time() - run.created > max_run_s:
                return
            continue
        if item is not None:
            yield item[1].decode() + "\n"
            continue
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
    publish = Publisher(redis, run, last_id)
    if not folder.is_dir():  # made by the replica that started it; deleted meanwhile, or not a shared folder here
        publish({"type": "failed", "message": f"the training folder {folder.parent} is not shared with the worker "
                 "that took the run (CONVSCOPE_TRAINING_DIR must be one folder for every replica and worker)"})
        return None
    finished = threading.Event()
    # the limits of the replica that admitted the run (a worker with other settings does not change them)
    control = Control(_control_words(redis, publish, float(params.get("grace_s", settings.training_client_grace_s)),
                                     float(params.get("max_run_s", settings.training_max_run_s)), finished))
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
