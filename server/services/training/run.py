"""One training run as the server knows it: its config, state, curves, checkpoints and the event log that
streams them (a browser that re-attaches gets the whole run, then what follows), and its checkpoints as
the weights of the model ``run-<id>`` (:func:`run_entry`), ``epoch-0`` (the starting weights) first."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.checkpoints import read_state_dict
from models.registry import InputSpec, ModelEntry, WeightsError, WeightsStatus
from models.training import data as datasets
from models.training.config import RunConfig, is_folder
from models.training.plan import Plan, Sources, choices, file_model_cost

ACTIVE = ("queued", "running", "paused")
MAX_POINTS = 2_000  # streamed points kept per run; beyond, every other old one is dropped (the curve keeps its shape)
EVENT_LOG = 256  # events kept for streams that re-attach with Last-Event-ID; older ones get the whole run instead


@dataclass
class Run:
    id: str
    name: str
    owner: str
    config: RunConfig
    folder: Path
    created: float = field(default_factory=time.time)
    state: str = "queued"
    message: str = ""
    info: dict[str, Any] = field(default_factory=dict)  # the worker's "started" event
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch
    points: list[dict[str, Any]] = field(default_factory=list)  # streamed points, without pictures
    checkpoints: list[dict[str, Any]] = field(default_factory=list)  # with the pictures at that moment
    latest: dict[str, Any] = field(default_factory=dict)  # the last point, with its pictures
    events: deque = field(default_factory=lambda: deque(maxlen=EVENT_LOG))  # (seq, event)
    seq: int = 0
    attached: int = 0  # event streams open on this run
    last_seen: float = field(default_factory=time.monotonic)  # the owner's last request or open stream
    finished: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    changed: threading.Condition = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    @property
    def model(self) -> str:
        return f"run-{self.id}"

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def record(self, event: dict[str, Any]) -> None:
        """Apply one event from the worker (or the service) and append it to the log streams read."""
        kind = event["type"]
        with self.lock:
            if kind == "started":
                self.info = {k: v for k, v in event.items() if k != "type"}
                self.latest = {k: self.info[k] for k in ("filters", "top5", "maps") if k in self.info}
                self.state = "running"
            elif kind == "point":
                self.latest = {k: v for k, v in event.items() if k != "type"}
                self.points.append({k: v for k, v in self.latest.items() if k not in ("filters", "top5", "maps")})
                if len(self.points) > MAX_POINTS:
                    self.points = self.points[: MAX_POINTS // 2: 2] + self.points[MAX_POINTS // 2:]
            elif kind == "epoch":
                self.history.append({k: v for k, v in event.items() if k != "type"})
            elif kind == "checkpoint":
                self.checkpoints.append({k: v for k, v in event.items() if k != "type"})
            elif kind == "state":
                self.state = event["state"]
            elif kind in ("done", "stopped", "failed"):
                self.state = kind
                self.message = event.get("message", "")
                self.finished = time.time()
            self.seq += 1
            self.events.append((self.seq, event))
            self.changed.notify_all()

    def since(self, seq: int) -> list[tuple[int, dict[str, Any]]] | None:
        """Events after ``seq``; None when some of them are no longer in the log (send the whole run)."""
        with self.lock:
            if seq >= self.seq:
                return []
            if not self.events or self.events[0][0] > seq + 1:
                return None
            return [(s, e) for s, e in self.events if s > seq]

    def checkpoint_names(self) -> list[str]:
        with self.lock:
            return [c["weights"] for c in self.checkpoints]

    def disk_bytes(self) -> int:
        with self.lock:
            return sum(int(c.get("bytes", 0)) for c in self.checkpoints)

    def as_json(self, full: bool = True) -> dict[str, Any]:
        with self.lock:
            out: dict[str, Any] = {
                "id": self.id, "model": self.model, "name": self.name, "state": self.state,
                "message": self.message, "config": self.config.as_json(), "created": self.created,
                "finished": self.finished, "history": list(self.history),
                "checkpoints": [{k: c[k] for k in ("epoch", "step", "weights")} for c in self.checkpoints],
            }
            if full:
                out.update(info=dict(self.info), points=list(self.points), latest=dict(self.latest),
                           snapshots=[dict(c) for c in self.checkpoints], seq=self.seq)
            return out


@dataclass(frozen=True)
class RunWeights:
    """A run's checkpoints as a model's weights source: ``epoch-<n>`` / ``step-<n>`` by name, and "trained"
    is the latest (the runtime resolves it to that name, so a new checkpoint never hides behind a cache)."""

    run: Run

    def checkpoints(self) -> list[str]:
        return self.run.checkpoint_names()

    def status(self) -> WeightsStatus:
        names = self.checkpoints()
        if not names:
            return WeightsStatus("untrained", "a training run with no checkpoint yet: its starting weights")
        return WeightsStatus("local", f"training run {self.run.name!r}, checkpoint {names[-1]} of "
                             f"{len(names)} ({self.run.state})")

    def load_checkpoint(self, name: str) -> dict[str, torch.Tensor]:
        if name not in self.checkpoints():
            raise WeightsError(f"run {self.run.id} has no checkpoint {name}")
        return read_state_dict(self.run.folder / f"{name}.pt")

    def load_state_dict(self) -> dict[str, torch.Tensor]:
        names = self.checkpoints()
        if not names:
            raise WeightsError(f"run {self.run.id} has no checkpoint yet")
        return self.load_checkpoint(names[-1])

    def metrics(self) -> dict[str, Any] | None:
        with self.run.lock:
            last = dict(self.run.history[-1]) if self.run.history else None
        return {"training_run": self.run.id, "last_epoch": last, "checkpoints": self.checkpoints()}


def training_sources(settings: Any) -> Sources:
    """Where the server's runs find their data and models, and the bounds of one run (``Settings`` fields)."""
    return Sources(data_dir=settings.data_dir, image_folders=dict(settings.image_folders),
                   models_file=settings.models_file, folder_max_images=settings.training_folder_max_images,
                   folder_max_bytes=settings.training_folder_max_bytes,
                   folder_max_listed=settings.image_folder_max_files, max_pixels=settings.max_image_pixels,
                   max_parameters=settings.training_max_parameters, max_flops=settings.training_max_flops)


def run_entry(run: Run, plan: Plan) -> ModelEntry:
    """The registry entry of the model ``run-<id>``: the run's network as configured, reading the run's input
    (an image folder's images as :func:`models.training.folders.preprocess` fits them), labelled with its
    dataset's classes (a folder's subfolder names), its checkpoints as weights."""
    config = plan.config
    channels, height, width = plan.input
    extras = f"{' with batch norm' if config.batch_norm else ''}{f', dropout {config.dropout:g}' if config.dropout else ''}"
    return ModelEntry(
        id=run.model, title=run.name,
        dataset=config.dataset if is_folder(config.dataset) else datasets.TITLES[config.dataset],
        family="run", input=InputSpec(channels, height, width), categories=plan.classes,
        builder=plan.architecture, make_preprocess=plan.make_preprocess, weights=RunWeights(run),
        description=f"A training run: {plan.title}{extras} on {config.dataset}, {config.optimizer}, "
                    f"lr {config.lr:g} ({config.schedule}), {config.epochs} epochs, from "
                    f"{'random weights' if config.init == 'random' else 'its current weights'}.",
        meta={"training_run": run.id, "architecture": config.architecture})


def training_choices(runs: Any) -> dict[str, list[dict[str, Any]]]:
    """The architectures and datasets a run of ``runs`` (a TrainingRuns) can be made of (``GET /api/training/runs``).
    A models-file network is built and run once to count its cost, then the answer is kept (``runs.costs``)."""

    def cost(entry: Any, shape: tuple[int, int, int]) -> tuple[int, int]:
        return runs.costs.get_or_compute((entry.id, id(entry.builder), shape), lambda: file_model_cost(entry, shape))

    return choices(runs.sources, runs.runtime.registry, cost)
