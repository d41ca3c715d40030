"""Training runs: each in its own worker process (:mod:`server.services.training.worker`), never in the
server's request pools, each registered as the model ``run-<id>`` whose weights are its checkpoints.

Limits: one active run per client address and ``max_runs`` in all (429 with Retry-After beyond); the
checkpoints of every run together within ``budget_bytes`` on disk (the oldest finished runs go first).
A run ends on Stop, when its owner has had no stream open and sent no request for ``grace_s``, after
``max_run_s`` (one client cannot hold the training slot all day), and when the server stops (SIGTERM: the
lifespan closes this service; a killed server takes its workers with it, see ``die_with_server``). No
process or temporary file outlives the service; the runs do (their records and checkpoints, :mod:`.records`):
a new server lists them again. With Redis, :mod:`.shared` runs them on workers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.training.config import ConfigError, RunConfig
from models.training.plan import Sources, plan
from server.errors import ApiError
from server.services.images.decode_worker import PARENT_ENV
from server.services.runtime.cache import ResultCache
from server.services.runtime.model_runtime import ModelRuntime
from server.services.training import records
from server.services.training.run import Run, run_entry
from server.services.work.child_processes import ChildSpawner

log = logging.getLogger("convscope.training")
REPO_ROOT = Path(__file__).resolve().parents[3]
STOP_WAIT_S = 5.0  # a worker asked to stop that is still there after this is killed


@dataclass
class _Worker:
    proc: subprocess.Popen
    ready: threading.Event = field(default_factory=threading.Event)
    run: Run | None = None  # set before its job is sent


@dataclass(frozen=True)
class TrainingLimits:
    max_runs: int = 1
    per_client: int = 1
    budget_bytes: int = 512 * 1024 * 1024
    max_kept_runs: int = 20
    grace_s: float = 60.0
    threads: int = 1
    point_interval_s: float = 0.4
    maps_interval_s: float = 1.0
    max_run_s: float = 3600.0
    max_checkpoints: int = 200

    @classmethod
    def from_settings(cls, settings: Any) -> TrainingLimits:
        return cls(settings.max_training_runs, settings.training_runs_per_client,
                   settings.training_checkpoint_budget_bytes, settings.max_kept_training_runs,
                   settings.training_client_grace_s, settings.training_threads, settings.training_point_interval_s,
                   settings.training_maps_interval_s, settings.training_max_run_s, settings.training_max_checkpoints)


class TrainingRuns:
    def __init__(self, runtime: ModelRuntime, folder: Path, data_dir: Path | None, limits: TrainingLimits,
                 sources: Sources | None = None) -> None:
        self.runtime = runtime
        self.folder = folder
        self.sources = sources or Sources(data_dir=data_dir)  # image folders, models file, a run's bounds
        self.limits = limits
        self._runs: dict[str, Run] = {}
        self._procs: dict[str, subprocess.Popen] = {}
        self._stopping: dict[str, float] = {}  # run id → when a stop was asked
        self._spare: _Worker | None = None  # a worker started ahead, waiting for its job
        self._lock = threading.Lock()
        self._preparing = threading.Lock()  # one spare started at a time (not one per concurrent request)
        # (parameters, FLOPs) of each models-file network the run list offers: counted once, not per visit
        self.costs: ResultCache[tuple[int, int]] = ResultCache("training network costs", 64 * 1024)
        self._spawner = ChildSpawner("training-spawner")
        self._closed = threading.Event()
        self._restore()
        self._evict()
        self._watch = threading.Thread(target=self._watchdog, name="training-watchdog", daemon=True)
        self._watch.start()

    def _restore(self) -> None:
        """The runs a previous server left on disk (a run it was training: interrupted)."""
        for run in records.load(self.folder):
            self._adopt(run)

    def _adopt(self, run: Run) -> None:
        """List ``run`` (restored, or started on another replica) and register its model."""
        with self._lock:
            self._runs[run.id] = run
        try:
            run_plan = plan(run.config, self.sources, self.runtime.registry, check_files=False)
        except ConfigError as exc:  # its models-file model or folder is gone here: listed, not a model
            log.warning("training run %s: its model cannot be built here (%s)", run.id, exc.message)
            return
        self.runtime.registry.register(run_entry(run, run_plan), replace=True)

    # --- looking ---------------------------------------------------------------------------------
    def list(self) -> list[Run]:
        with self._lock:
            return sorted(self._runs.values(), key=lambda r: r.created)

    def get(self, run_id: str, client: str | None = None) -> Run:
        with self._lock:
            run = self._runs.get(run_id)
        if run is None:
            raise ApiError(404, "unknown_run", f"There is no training run {run_id!r}; see /api/training/runs.")
        if client is not None and client == run.owner:
            run.last_seen = time.monotonic()
        return run

    def _owned(self, run_id: str, client: str) -> Run:
        run = self.get(run_id, client)
        if run.owner != client:
            raise ApiError(403, "not_your_run", "Only the computer that started this run can change it; "
                                                "others can watch it.")
        return run

    # --- starting --------------------------------------------------------------------------------
    def start(self, config: RunConfig, name: str | None, client: str) -> Run:
        try:
            run_plan = plan(config, self.sources, self.runtime.registry)
        except ConfigError as exc:
            raise ApiError(422, f"invalid_{exc.knob}", exc.message) from None
        self._check_budget(config, run_plan.weights_bytes)
        run_id = secrets.token_hex(4)
        run = Run(run_id, name or f"{run_plan.title} on {config.dataset} ({run_id})", client, config,
                  self.folder / f"run-{run_id}")
        with self._lock:
            self._admit(run, [r for r in self._runs.values() if r.active])
            self._runs[run_id] = run
        run.folder.mkdir(parents=True, exist_ok=True)
        records.save(run)
        self.runtime.registry.register(run_entry(run, run_plan))
        self._launch(run)
        self._evict()
        return run

    def _admit(self, run: Run, active: list[Run]) -> None:
        """429 when ``run``'s owner has a run going, or ``max_runs`` are (called under the lock)."""
        mine = [r for r in active if r.owner == run.owner]
        if len(mine) >= self.limits.per_client:
            raise ApiError(429, "run_in_progress", "You have a training run going already (one per computer); "
                           "stop it or wait for it to end.", {"Retry-After": str(self._retry_after(mine))})
        if len(active) >= self.limits.max_runs:
            raise ApiError(429, "training_busy", f"This server trains {self.limits.max_runs} run(s) at once and "
                           "that many are going; try again when one ends.",
                           {"Retry-After": str(self._retry_after(active))})

    def _launch(self, run: Run) -> None:
        try:
            self._spawn(run)
        except OSError as exc:
            self._record(run, {"type": "failed", "message": f"the training process could not start ({exc})"})

    def _record(self, run: Run, event: dict[str, Any]) -> None:
        """Apply an event to ``run`` and keep its record on disk when the event changes what a restart shows."""
        run.record(event)
        if event["type"] in records.SAVED_EVENTS:
            records.save(run)

    def _check_budget(self, config: RunConfig, per_checkpoint: int) -> None:
        count = config.epochs + 1  # epoch-0: the starting weights
        if config.checkpoint_every_steps:
            n = config.train_size or 60_000
            count += config.epochs * math.ceil(n / config.batch_size) // config.checkpoint_every_steps
        knob = "checkpoint_every_steps" if config.checkpoint_every_steps else "epochs"
        if count > self.limits.max_checkpoints:  # each keeps the pictures of its moment, in memory and in snapshots
            raise ApiError(422, f"invalid_{knob}", f"{knob}: {count} checkpoints; a run keeps at most "
                           f"{self.limits.max_checkpoints}; ask for fewer.")
        if per_checkpoint * count > self.limits.budget_bytes:
            raise ApiError(422, f"invalid_{knob}", f"{knob}: {count} checkpoints of {per_checkpoint / 2**20:.1f} MB "
                           f"would not fit the {self.limits.budget_bytes / 2**20:.0f} MB this server keeps for "
                           "checkpoints; ask for fewer.")

    def _retry_after(self, runs: list[Run]) -> int:
        """Seconds until the soonest of ``runs`` should end, from its pace so far (30 when unknown)."""
        left = [(run.info["total_steps"] - run.latest.get("step", 0)) * run.config.batch_size
                / run.latest["images_per_s"] for run in runs
                if run.info.get("total_steps") and run.latest.get("images_per_s")]
        return max(1, min(3600, math.ceil(min(left, default=30.0))))

    def prepare(self) -> None:
        """Start a spare worker (its imports and warm-up take seconds) so that the next run's first point comes
        soon after Start; called when someone looks at the runs (the Train view opens)."""
        with self._preparing:  # concurrent callers (a class opening the Train view) wait for this one's spare
            self._prepare()

    def _prepare(self) -> None:
        with self._lock:
            if self._closed.is_set() or (self._spare is not None and self._spare.proc.poll() is None):
                return
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), PARENT_ENV: str(os.getpid()),
               "OMP_NUM_THREADS": str(self.limits.threads), "MKL_NUM_THREADS": str(self.limits.threads)}
        proc = self._spawner.popen([sys.executable, "-m", "server.services.training.worker"], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True, bufsize=1)
        worker = _Worker(proc)
        threading.Thread(target=self._read, args=(worker,), name="training-worker", daemon=True).start()
        with self._lock:
            spare, self._spare = self._spare, worker
        if spare is not None:
            _end_process(spare.proc)

    @property
    def ready(self) -> bool:
        """A spare worker has done its imports and warm-up."""
        with self._lock:
            return self._spare is not None and self._spare.ready.is_set()

    def _spawn(self, run: Run) -> None:
        with self._preparing:  # two runs starting at once never take the same spare
            self._prepare()
            with self._lock:
                worker, self._spare = self._spare, None
                assert worker is not None
                worker.run = run
                self._procs[run.id] = worker.proc
        job = {"config": run.config.as_json(), "run_dir": str(run.folder),
               "sources": self.sources.as_json(), "classes": list(self.runtime.registry.get(run.model).categories),
               "threads": self.limits.threads,
               "device": self._device(), "point_interval_s": self.limits.point_interval_s,
               "maps_interval_s": self.limits.maps_interval_s}
        assert worker.proc.stdin is not None
        worker.proc.stdin.write(json.dumps(job) + "\n")
        worker.proc.stdin.flush()

    def _device(self) -> str:
        return training_device(self.runtime)

    def _read(self, worker: _Worker) -> None:
        """The worker's events, into its run (a spare has none until its job is sent: only "ready" comes before)."""
        proc = worker.proc
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(event, dict) or "type" not in event:
                    continue
                if event["type"] == "ready":
                    worker.ready.set()
                elif worker.run is not None and not self._closed.is_set():  # closing: close() ends the runs
                    self._record(worker.run, event)
                    if event["type"] == "checkpoint":
                        self._evict()
        finally:
            proc.wait()
            run = worker.run
            if run is not None:
                self._ended(run, proc)

    def _ended(self, run: Run, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.pop(run.id, None)
            stopped = self._stopping.pop(run.id, None) is not None
        for partial in run.folder.glob(".*.pt.partial"):
            partial.unlink(missing_ok=True)
        if run.active and not self._closed.is_set():
            self._record(run, {"type": "stopped"} if stopped else
                         {"type": "failed", "message": f"the training process ended (exit {proc.returncode})"})

    # --- controlling -----------------------------------------------------------------------------
    def _send(self, run: Run, word: str) -> None:
        with self._lock:
            proc = self._procs.get(run.id)
        if proc is None or proc.stdin is None:
            raise ApiError(409, "run_not_running", f"Run {run.id} is {run.state}; there is nothing to {word}.")
        try:
            proc.stdin.write(word + "\n")
            proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass  # it has just ended: the reader records how

    def pause(self, run_id: str, client: str) -> Run:
        run = self._owned(run_id, client)
        self._send(run, "pause")
        return run

    def resume(self, run_id: str, client: str) -> Run:
        run = self._owned(run_id, client)
        self._send(run, "resume")
        return run

    def stop(self, run_id: str, client: str) -> Run:
        run = self._owned(run_id, client)
        self._stop(run)
        return run

    def _stop(self, run: Run) -> None:
        with self._lock:
            if run.id not in self._procs:
                return
            self._stopping.setdefault(run.id, time.monotonic())
        try:
            self._send(run, "stop")
        except ApiError:
            pass

    def rename(self, run_id: str, name: str, client: str) -> Run:
        run = self._owned(run_id, client)
        self._renamed(run, name)
        records.save(run)
        return run

    def _renamed(self, run: Run, name: str) -> None:
        run.name = name
        entry = self.runtime.registry.get(run.model)
        self.runtime.registry.register(dataclasses.replace(entry, title=name), replace=True)

    def delete(self, run_id: str, client: str) -> None:
        self._remove(self._owned(run_id, client))

    def _remove(self, run: Run) -> None:
        with self._lock:
            proc = self._procs.get(run.id)
            self._runs.pop(run.id, None)
        if proc is not None:
            _end_process(proc)
        self.runtime.drop(run.model)
        records.remove(run.folder)

    # --- streams and owners ----------------------------------------------------------------------
    def attach(self, run: Run, client: str) -> None:
        with run.lock:
            run.attached += 1 if client == run.owner else 0
        run.last_seen = time.monotonic()

    def detach(self, run: Run, client: str) -> None:
        with run.lock:
            run.attached -= 1 if client == run.owner else 0
        run.last_seen = time.monotonic()

    def _watchdog(self) -> None:
        while not self._closed.wait(0.5):
            now = time.monotonic()
            for run in self.list():
                if run.active and run.attached <= 0 and now - run.last_seen > self.limits.grace_s:
                    self._stop(run)  # its owner left
                elif run.active and time.time() - run.created > self.limits.max_run_s:
                    self._stop(run)  # it has had its time (its checkpoints stay)
            with self._lock:
                late = [self._procs[i] for i, t in self._stopping.items() if now - t > STOP_WAIT_S and i in self._procs]
            for proc in late:
                proc.kill()

    # --- disk ------------------------------------------------------------------------------------
    def _evict(self) -> None:
        """Delete the oldest finished runs until the checkpoints fit the budget and at most max_kept_runs remain."""
        runs = self.list()
        total = sum(r.disk_bytes() for r in runs)
        for run in runs:
            if total <= self.limits.budget_bytes and len(runs) <= self.limits.max_kept_runs:
                break
            if run.active:
                continue
            total -= run.disk_bytes()
            runs.remove(run)
            self._remove(run)

    def close(self) -> None:
        """Stop every worker; a run still training is recorded as interrupted (its checkpoints stay on disk,
        with every finished run's, for the next server)."""
        self._closed.set()
        with self._lock:
            procs = list(self._procs.values()) + ([self._spare.proc] if self._spare is not None else [])
            self._spare = None
        for proc in procs:
            _end_process(proc)
        for run in self.list():
            if run.active:
                for partial in run.folder.glob(".*.pt.partial"):
                    partial.unlink(missing_ok=True)
                run.record({"type": "failed", "message": records.interrupted_message(run, "the server shut down")})
                records.save(run)
            self.runtime.drop(run.model)
        with self._lock:
            self._runs.clear()
        self._spawner.close()


def training_device(runtime: ModelRuntime) -> str:
    return "cuda" if runtime.device.type == "cuda" else "cpu"  # MPS training is left to the CPU


def _end_process(proc: subprocess.Popen) -> None:
    """Ask a worker to stop (close its stdin), then kill it if it has not ended within STOP_WAIT_S."""
    try:
        if proc.stdin is not None:
            proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout=STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
