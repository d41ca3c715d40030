"""Training runs over HTTP (issue 24): start, list, follow (Server-Sent Events), pause/resume/stop, rename, delete.
A run is the model ``run-<id>``; its checkpoints are that model's weights (``?weights=epoch-3``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from models.training import config as knobs
from models.training.config import BUNDLED_RECIPES, for_architecture
from server.deps import ClientAddressDep, LastEventIdDep, SettingsDep, TrainingRunsDep
from server.openapi import json_example
from server.responses import EventStreamResponse
from server.services.training import run_events
from server.services.training.run import training_choices

router = APIRouter(prefix="/api/training", tags=["training"])

RunId = Annotated[str, Path(pattern=r"^[0-9a-f]{8}$", description="the run's id (8 hex digits)")]
Augmentation = Literal["shift", "flip", "rotate", "scale"]


class RunBody(BaseModel):
    """A run's knobs; what is left out comes from the architecture's bundled recipe (AdamW, one-cycle, ...)."""

    model_config = ConfigDict(extra="forbid")

    architecture: str = Field(
        "lenet5", min_length=1, max_length=80, pattern=r"^[a-z0-9._-]+$",
        description="lenet5, mnist-shallow, mnist-deep, tinyvgg-shapes, or the id of a models-file model whose input "
                    "is at most 64×64 and whose parameters and FLOPs are within the server's training budget (else 422 "
                    "invalid_architecture). A models-file model whose output count is not the dataset's class count "
                    "has its last Linear layer replaced by one with an output per class")
    dataset: str | None = Field(
        None, max_length=47, pattern=r"^(mnist|fashion-mnist|shapes|folder:[A-Za-z0-9][A-Za-z0-9_-]{0,39})$",
        description="mnist, fashion-mnist, shapes, or folder:NAME (a named image folder, GET /api/image-folders; one "
                    "subfolder per class, at least two; images fitted to the architecture's input; 1 in 5 of each "
                    "class held out, chosen by the seed). Default: the architecture's own (MNIST; Shapes for "
                    "tinyvgg-shapes)")
    epochs: int | None = Field(None, ge=1, le=knobs.MAX_EPOCHS)
    batch_size: int | None = Field(None, ge=knobs.MIN_BATCH, le=knobs.MAX_BATCH)
    optimizer: Literal["sgd", "momentum", "adam", "adamw"] | None = None
    lr: float | None = Field(None, ge=knobs.MIN_LR, le=knobs.MAX_LR, description="learning rate (one-cycle: its peak)")
    schedule: Literal["constant", "step", "cosine", "onecycle"] | None = None
    weight_decay: float | None = Field(None, ge=0.0, le=knobs.MAX_WEIGHT_DECAY)
    dropout: float | None = Field(None, ge=0.0, le=knobs.MAX_DROPOUT, description="dropout p before the output layer")
    batch_norm: StrictBool | None = Field(None, description="batch normalisation after every convolution")
    augment: StrictBool | Annotated[list[Augmentation], Field(max_length=4)] | None = Field(
        None, description="true: the dataset's default augmentations; false: none; or a list")
    train_size: int | None = Field(None, ge=knobs.MIN_TRAIN_SIZE, le=knobs.MAX_TRAIN_SIZE,
                                   description="train on the first N training images (default: all there are)")
    seed: int = Field(0, ge=0, le=knobs.MAX_SEED)
    init: Literal["random", "current"] = Field(
        "random", description="random (seeded) weights (a models-file model: every module's reset_parameters, seeded), "
                              "or fine-tune from the architecture's current (bundled or models-file) weights: for a "
                              "bundled one no batch norm (nor dropout for lenet5 / tinyvgg-shapes), its own input")
    checkpoint_every_steps: int = Field(0, ge=0, le=knobs.MAX_CHECKPOINT_EVERY,
                                        description="also a checkpoint every N steps (0: at each epoch's end only)")
    name: str | None = Field(None, min_length=1, max_length=80, pattern=r"^[^\u0000-\u001f\u007f]*$")


    @field_validator("epochs", "batch_size", "lr", "weight_decay", "dropout", "train_size", "seed",
                     "checkpoint_every_steps", mode="before")
    @classmethod
    def _numbers_not_booleans(cls, value: object) -> object:
        if isinstance(value, bool):  # JSON true is not the number 1
            raise ValueError("must be a number, not true or false")
        return value


class RenameBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=80, pattern=r"^[^\u0000-\u001f\u007f]*$")


RUN_EXAMPLE = {"id": "3fa2b9c1", "model": "run-3fa2b9c1", "name": "LeNet-5 on mnist (3fa2b9c1)", "state": "running",
               "config": {"architecture": "lenet5", "dataset": "mnist", "epochs": 10},
               "history": [{"epoch": 1, "step": 125, "loss": 0.21, "accuracy": 0.94, "val_loss": 0.2,
                            "val_accuracy": 0.94, "lr": 0.0029}],
               "checkpoints": [{"epoch": 0, "step": 0, "weights": "epoch-0"},
                               {"epoch": 1, "step": 125, "weights": "epoch-1"}]}
CHECKPOINTS = ("Checkpoints (`checkpoints`, and `checkpoint` events in the stream) come in order: `epoch-0` first (epoch "
               "0, step 0: the starting weights, before any step, so the untrained network can be shown), then "
               "`step-<n>` and `epoch-<n>`. Each is a weights value of the model `run-<id>` (`?weights=epoch-0`).")


@router.post("/runs", status_code=201, summary="Start a training run in its own process (429 past the limits)",
             description="422 `invalid_<knob>` names the knob that cannot be trained here (an unknown dataset or "
                         "folder, a folder with one class, a models-file model too large to train). " + CHECKPOINTS,
             responses={**json_example(RUN_EXAMPLE), 429: {"description": "one run per client, N in all"}})
def start_run(body: RunBody, runs: TrainingRunsDep, client: ClientAddressDep) -> dict[str, Any]:
    changes = body.model_dump(exclude_none=True, exclude={"architecture", "name"})
    run = runs.start(for_architecture(body.architecture, **changes), body.name, client)
    return run.as_json(full=False)


@router.get("/runs", summary="Every training run (newest last); readies a worker process for the next",
            description="`choices`: the architectures (bundled, and the models-file models that fit: input at most "
                        "64×64, within the server's parameter and FLOP budget) and datasets (built-in, and "
                        "`folder:NAME` for each named image folder) a run can be made of here. " + CHECKPOINTS)
def list_runs(runs: TrainingRunsDep) -> dict[str, Any]:
    runs.prepare()
    return {"runs": [run.as_json(full=False) for run in runs.list()], "ready": runs.ready,
            "recipes": {name: config.as_json() for name, config in BUNDLED_RECIPES.items()},
            "choices": training_choices(runs)}


@router.get("/runs/{run_id}", summary="One run: config, state, curves, checkpoints and the pictures at each",
            description=CHECKPOINTS, responses=json_example(RUN_EXAMPLE))
def get_run(run_id: RunId, runs: TrainingRunsDep, client: ClientAddressDep) -> dict[str, Any]:
    return runs.get(run_id, client).as_json(full=True)


@router.get("/runs/{run_id}/events", response_class=EventStreamResponse,
            summary="Event stream: the run (snapshot), then points (≥2 a second), epochs, checkpoints",
            description=CHECKPOINTS)
async def follow_run(run_id: RunId, runs: TrainingRunsDep, client: ClientAddressDep, settings: SettingsDep,
                     last_event_id: LastEventIdDep) -> EventStreamResponse:
    run = runs.get(run_id, client)
    stream = run_events(runs, run, client, last_event_id, settings.sse_heartbeat_s, settings.sse_max_stream_s)
    return EventStreamResponse(stream, headers={"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"})


@router.post("/runs/{run_id}/pause", summary="Pause a run (its process waits between two steps)")
def pause_run(run_id: RunId, runs: TrainingRunsDep, client: ClientAddressDep) -> dict[str, Any]:
    return runs.pause(run_id, client).as_json(full=False)


@router.post("/runs/{run_id}/resume", summary="Resume a paused run")
def resume_run(run_id: RunId, runs: TrainingRunsDep, client: ClientAddressDep) -> dict[str, Any]:
    return runs.resume(run_id, client).as_json(full=False)


@router.post("/runs/{run_id}/stop", summary="Stop a run (its checkpoints stay; its process ends)")
def stop_run(run_id: RunId, runs: TrainingRunsDep, client: ClientAddressDep) -> dict[str, Any]:
    return runs.stop(run_id, client).as_json(full=False)


@router.patch("/runs/{run_id}", summary="Rename a run")
def rename_run(run_id: RunId, body: RenameBody, runs: TrainingRunsDep, client: ClientAddressDep) -> dict[str, Any]:
    return runs.rename(run_id, body.name, client).as_json(full=False)


@router.delete("/runs/{run_id}", summary="Delete a run: its process, its checkpoints and its model")
def delete_run(run_id: RunId, runs: TrainingRunsDep, client: ClientAddressDep) -> dict[str, Any]:
    runs.delete(run_id, client)
    return {"id": run_id, "deleted": True}
