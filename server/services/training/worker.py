"""One training run, in its own process (``python -m server.services.training.worker``).

It drives the one training loop (:class:`models.training.loop.Trainer`) and, between steps, streams what the
Train view shows and writes checkpoints; the server's request threads never train.

Protocol. stdin: one JSON line (the job: ``config``, ``run_dir``, ``sources`` (or only ``data_dir``), ``classes``
(the run's model's labels: a folder whose classes changed since is a failed run, not mislabelled answers),
``threads``, ``device``, ``point_interval_s``, ``maps_interval_s``), then control lines ``pause``, ``resume``,
``stop``; the end of stdin (the server went away) is a stop. stdout: one JSON event per line (``started``,
``point``, ``epoch``, ``checkpoint``, ``state``, then ``done``, ``stopped`` or ``failed``). The first checkpoint,
``epoch-0``, holds the starting weights (before any step), so every view can show the untrained network. A
checkpoint is written to a temporary name and renamed, so a file named ``epoch-<n>.pt`` is always whole. The
process dies with the server (``die_with_server``).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from models.training import data as datasets
from models.training.config import OPTIMIZERS, RunConfig
from models.training.loop import Trainer, make_optimizer
from models.training.networks import architecture, first_conv
from models.training.plan import Sources, plan
from server.services.images.decode_worker import die_with_server
from server.services.runtime.hooks import recording_hooks

HELD_OUT_SUBSET = 200  # held-out images measured at each streamed point (all of them at each epoch's end)
TRAIN_EVAL_SUBSET = 1_000  # training images measured (eval mode, no augmentation) at each epoch's end
TOP = 5


class Control:
    """Pause / resume / stop from the server, read from stdin by a thread."""

    def __init__(self, stream: Any) -> None:
        self.running = threading.Event()
        self.running.set()
        self.stop = threading.Event()
        self._stream = stream
        threading.Thread(target=self._read, name="control", daemon=True).start()

    def _read(self) -> None:
        for line in self._stream:
            word = line.strip()
            if word == "pause":
                self.running.clear()
            elif word == "resume":
                self.running.set()
            elif word == "stop":
                break
        self.stop.set()  # "stop", or stdin closed: the server is gone
        self.running.set()


class Emitter:
    def __init__(self) -> None:
        self._out = sys.stdout

    def __call__(self, kind: str, **fields: Any) -> None:
        self._out.write(json.dumps({"type": kind, **fields}, separators=(",", ":")) + "\n")
        self._out.flush()


def _u8(tensor: torch.Tensor) -> dict[str, Any]:
    """A float tensor as uint8 (its own min→0, max→255), base64, with its shape and range."""
    t = tensor.detach().float().cpu()
    lo, hi = float(t.min()), float(t.max())
    scaled = ((t - lo) / (hi - lo if hi > lo else 1.0) * 255).round().to(torch.uint8)
    return {"shape": list(t.shape), "min": lo, "max": hi, "data": base64.b64encode(scaled.numpy().tobytes()).decode()}


class Snapshots:
    """What the page draws of the network at a moment: the first layer's filters, the probe image's top-5
    and its first-layer feature maps."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.layer_name, self.layer = first_conv(trainer.model)
        self.probe = trainer.data.test_x[:1]
        self.probe_label = int(trainer.data.test_y[0])

    @torch.no_grad()
    def __call__(self, maps: bool) -> dict[str, Any]:
        model = self.trainer.model
        model.eval()
        captured: list[torch.Tensor] = []
        with recording_hooks(model, [(self.layer, lambda _m, _i, out: captured.append(out))]):
            logits = model(self.trainer.batch(self.probe))
        probs = F.softmax(logits[0].float(), 0)
        values, indices = probs.topk(min(TOP, probs.numel()))
        out: dict[str, Any] = {
            "filters": _u8(self.layer.weight),
            "top5": [{"index": int(i), "label": self.trainer.data.classes[int(i)], "probability": round(float(v), 5)}
                     for v, i in zip(values, indices)],
        }
        if maps:
            out["maps"] = _u8(captured[0][0])
        return out


def _run(job: dict[str, Any], control: Control, emit: Emitter) -> str:
    config = RunConfig(**{**job["config"], "augment": tuple(job["config"]["augment"])})
    torch.set_num_threads(int(job["threads"]))
    data_dir = Path(job["data_dir"]) if job.get("data_dir") else None
    sources = Sources.from_json(job["sources"]) if job.get("sources") else Sources(data_dir=data_dir)
    run_plan = plan(config, sources)
    if job.get("classes") is not None and list(run_plan.classes) != job["classes"]:
        raise ValueError(f"the dataset's classes changed since the run was started ({', '.join(job['classes'])} → "
                         f"{', '.join(run_plan.classes)}); start it again")
    data = run_plan.load_data(sources)
    trainer = Trainer(config, data, job.get("device", "cpu"), network=run_plan.network())
    run_dir = Path(job["run_dir"])
    snapshots = Snapshots(trainer)
    held_x, held_y = data.test_x[:HELD_OUT_SUBSET], data.test_y[:HELD_OUT_SUBSET]
    emit("started", steps_per_epoch=trainer.steps_per_epoch, total_steps=trainer.total_steps,
         train_size=len(data.train_x), heldout_size=len(data.test_x), classes=list(data.classes),
         train_source=data.train_source, test_set=data.test_set, layer=snapshots.layer_name,
         probe={"label": snapshots.probe_label, "image": _u8(snapshots.probe[0].float())},
         **snapshots(maps=True))
    # epoch-0: the untrained network, before any step (nothing here draws a random number or changes a weight)
    _checkpoint(trainer, "epoch-0", 0, 0, run_dir, snapshots, emit)
    point_every, maps_every = float(job["point_interval_s"]), float(job["maps_interval_s"])
    busy = 0.0  # seconds spent running (not paused), for images per second
    images = 0
    window = {"loss": 0.0, "correct": 0, "count": 0}
    epoch_sums = {"loss": 0.0, "correct": 0, "count": 0}
    last_point = last_maps = time.perf_counter()
    resumed = time.perf_counter()
    for step in trainer.steps():
        for sums in (window, epoch_sums):
            sums["loss"] += step.loss * step.count
            sums["correct"] += step.correct
            sums["count"] += step.count
        images += step.count
        now = time.perf_counter()
        if now - last_point >= point_every or step.step == 1 or step.epoch_end:
            held = trainer.evaluate(held_x, held_y)
            seconds = busy + now - resumed
            extra = snapshots(maps=now - last_maps >= maps_every)
            if "maps" in extra:
                last_maps = now
            emit("point", epoch=step.epoch, step=step.step, loss=window["loss"] / window["count"],
                 accuracy=window["correct"] / window["count"], val_loss=held["loss"], val_accuracy=held["accuracy"],
                 lr=step.lr, images_per_s=images / seconds if seconds > 0 else 0.0, **extra)
            window = {"loss": 0.0, "correct": 0, "count": 0}
            last_point = now
        if step.epoch_end:
            _end_epoch(trainer, step, epoch_sums, run_dir, snapshots, emit)
            epoch_sums = {"loss": 0.0, "correct": 0, "count": 0}
        elif config.checkpoint_every_steps and step.step % config.checkpoint_every_steps == 0:
            _checkpoint(trainer, f"step-{step.step}", step.epoch, step.step, run_dir, snapshots, emit)
        if not control.running.is_set():
            busy += time.perf_counter() - resumed
            emit("state", state="paused")
            control.running.wait()
            resumed = time.perf_counter()
            if not control.stop.is_set():
                emit("state", state="running")
        if control.stop.is_set():
            return "stopped"
    return "done"


def _end_epoch(trainer: Trainer, step: Any, sums: dict[str, float], run_dir: Path, snapshots: Snapshots,
               emit: Emitter) -> None:
    data = trainer.data
    held = trainer.evaluate(data.test_x, data.test_y)
    clean = trainer.evaluate(data.train_x[:TRAIN_EVAL_SUBSET], data.train_y[:TRAIN_EVAL_SUBSET])
    emit("epoch", epoch=step.epoch, step=step.step, loss=clean["loss"], accuracy=clean["accuracy"],
         val_loss=held["loss"], val_accuracy=held["accuracy"], lr=step.lr,
         running_loss=sums["loss"] / sums["count"], running_accuracy=sums["correct"] / sums["count"])
    _checkpoint(trainer, f"epoch-{step.epoch}", step.epoch, step.step, run_dir, snapshots, emit)


def _checkpoint(trainer: Trainer, name: str, epoch: int, step: int, run_dir: Path, snapshots: Snapshots,
                emit: Emitter) -> None:
    path = run_dir / f"{name}.pt"
    partial = run_dir / f".{name}.pt.partial"
    torch.save(trainer.state_dict(), partial)
    os.replace(partial, path)
    emit("checkpoint", weights=name, epoch=epoch, step=step, bytes=path.stat().st_size, **snapshots(maps=True))


def warm_up() -> None:
    """A process's first optimiser and backward pass cost seconds (lazy imports inside PyTorch): a spare worker
    pays them while it waits for its job, so a run's first point comes soon after Start. Draws nothing that
    a run uses: the Trainer seeds every random stream itself."""
    for name in OPTIMIZERS:
        model = architecture(RunConfig())
        optimizer = make_optimizer(replace(RunConfig(), optimizer=name), model.parameters())
        images = datasets.affine(torch.rand(2, 1, 28, 28), torch.Generator(), ("shift", "rotate", "scale", "flip"))
        F.cross_entropy(model(images), torch.zeros(2, dtype=torch.long)).backward()
        optimizer.step()


def main() -> int:
    die_with_server()
    warm_up()
    emit = Emitter()
    emit("ready")
    job = json.loads(sys.stdin.readline())
    control = Control(sys.stdin)
    try:
        ending = _run(job, control, emit)
    except Exception as exc:  # noqa: BLE001 - any failure ends the run with its reason, for the page
        emit("failed", message=f"{type(exc).__name__}: {exc}")
        return 1
    emit(ending)
    return 0


if __name__ == "__main__":
    sys.exit(main())
