"""A run's record on disk (``run-<id>/run.json`` beside its checkpoints), so that runs outlive the server.

The record is the run as the page sees it (``Run.as_json(full=True)``: config, state, curves, checkpoints with
their pictures) plus its owner. It is written whole to a temporary name and renamed, so a record is never half
written; it is rewritten when the run starts, at each epoch, checkpoint and state change, and at its end (the
points streamed since the last of those are lost if the server dies). A run that was still training when its
server went away is read back as failed, "interrupted", with its checkpoints usable.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from models.training.config import RunConfig
from server.services.training.run import Run

log = logging.getLogger("convscope.training")

RECORD = "run.json"
DELETED = ".deleted-"  # a run folder being deleted is renamed to this prefix first
SAVED_EVENTS = frozenset({"started", "epoch", "checkpoint", "state", "done", "stopped", "failed"})


def training_folder(settings: Any) -> Path:
    """Where runs live: ``training_dir``, else "training" beside the image folder (with the job queue, a folder
    every replica and worker shares)."""
    return Path(settings.training_dir) if settings.training_dir else settings.storage_dir.parent / "training"


def as_record(run: Run) -> dict[str, Any]:
    return {"owner": run.owner, "run": run.as_json(full=True)}


def save(run: Run, record: dict[str, Any] | None = None) -> None:
    """Write ``run``'s record (or the one given) into its folder, atomically; a folder deleted meanwhile (the run
    was deleted or evicted) is left alone."""
    if not run.folder.is_dir():
        return
    partial = run.folder / f".{RECORD}.{secrets.token_hex(4)}.partial"
    try:
        partial.write_text(json.dumps(record or as_record(run), separators=(",", ":")))
        os.replace(partial, run.folder / RECORD)
    except OSError as exc:  # a disk full, a folder removed meanwhile: the run goes on, its record is older
        log.warning("training run %s: could not save its record (%s)", run.id, exc)
        partial.unlink(missing_ok=True)


def restore(record: dict[str, Any], folder: Path) -> Run:
    """The :class:`Run` a record describes (its event log empty: a stream attaching gets the whole run)."""
    data = record["run"]
    known = {f.name for f in dataclasses.fields(RunConfig)}  # a knob a later version dropped is left out
    config = RunConfig(**{**{k: v for k, v in data["config"].items() if k in known},
                          "augment": tuple(data["config"].get("augment", ()))})
    run = Run(data["id"], data["name"], record["owner"], config, folder, created=data["created"],
              state=data["state"], message=data["message"], info=dict(data.get("info", {})),
              history=list(data["history"]), points=list(data.get("points", [])),
              checkpoints=[dict(c) for c in data.get("snapshots", data["checkpoints"])],
              latest=dict(data.get("latest", {})), seq=int(data.get("seq", 0)), finished=data.get("finished"))
    return run


def interrupted_message(run: Run, why: str) -> str:
    names = run.checkpoint_names()
    kept = f"its checkpoints up to {names[-1]} are kept and usable" if names else "it had no checkpoint yet"
    return f"Interrupted: {why} while it trained; {kept}."


def read(path: Path) -> Run | None:
    """The run recorded in the folder ``path``, changing nothing on disk (None: no record, or one this version
    cannot read, which is left alone: a person may want its checkpoints)."""
    try:
        return restore(json.loads((path / RECORD).read_text()), path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("training: %s has a record this version cannot read (%s); not listed", path, exc)
        return None


def reopen(run: Run, why: str) -> bool:
    """Make a run read back from its record true to the disk: a checkpoint whose file is gone is forgotten, and a
    run recorded as still training ends as failed, interrupted by ``why`` (its checkpoints usable). Whether the
    record changed."""
    kept = [c for c in run.checkpoints if (run.folder / f"{c['weights']}.pt").is_file()]
    changed = len(kept) != len(run.checkpoints)
    run.checkpoints = kept
    if run.active:
        run.record({"type": "failed", "message": interrupted_message(run, why)})
        changed = True
    return changed


def remove(folder: Path) -> None:
    """Delete a run's folder: first renamed out of the runs in one step (from then on nothing lists, restores or
    re-seeds it, even if this process dies before the rest), then removed."""
    gone = folder.with_name(f"{DELETED}{folder.name}-{secrets.token_hex(4)}")
    try:
        os.rename(folder, gone)
    except FileNotFoundError:
        return
    except OSError as exc:  # a file system that cannot rename a folder: removed where it is
        log.warning("training: could not rename %s before removing it (%s)", folder, exc)
        gone = folder
    shutil.rmtree(gone, ignore_errors=True)


def leftovers(folder: Path) -> None:
    """Remove what a process that died while deleting a run left (its folder, renamed away)."""
    for path in folder.glob(f"{DELETED}run-*") if folder.is_dir() else []:
        shutil.rmtree(path, ignore_errors=True)


def load(folder: Path) -> Iterator[Run]:
    """Every run recorded under ``folder``, oldest first. A run recorded as still training ends here as failed
    (its server died or stopped meanwhile); a checkpoint whose file is gone is forgotten; leftovers (temporary
    files, a run folder without a record, a deleted run's folder) are removed."""
    leftovers(folder)
    runs = []
    for path in sorted(folder.glob("run-*")) if folder.is_dir() else []:
        for partial in path.glob(".*.partial"):
            partial.unlink(missing_ok=True)
        if not (path / RECORD).is_file():  # a run whose server died before its first record: nothing to show
            shutil.rmtree(path, ignore_errors=True)
            continue
        run = read(path)
        if run is None:
            continue
        if reopen(run, "the server stopped"):
            save(run)
        runs.append(run)
    yield from sorted(runs, key=lambda r: r.created)
