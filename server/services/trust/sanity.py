"""The model-randomisation sanity check of saliency methods, as a background job.

For one image and class, each chosen method's map is computed on a private copy of the model, then again
after each step of the cascade (see :mod:`server.services.trust.cascade`), and scored against the
original map (see :mod:`server.services.trust.scores`). The served model is never touched. The run is a
job on the shared background worker (progress, cancellable between maps); its result, with every map,
is kept in the trust checks' :class:`ResultCache` per (model, weights, image, methods, class, seed).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from server.errors import ApiError
from server.services.runtime.cache import ResultCache
from server.services.runtime.inputs import ModelInputs
from server.services.runtime.model_runtime import LoadedModel
from server.services.saliency.base import SaliencyMethod
from server.services.trust.cascade import Unit, cascade_units, private_copy, randomise_step
from server.services.trust.scores import compare, verdict
from server.services.work.background_jobs import Job, Jobs
from server.services.work.cancel import WorkCancelled
from server.services.work.job_queue import SHAREABLE_FAMILIES, Task, WorkerContext
from server.services.work.scheduler import Admit


@dataclass(frozen=True)
class SanityKey:
    model: str
    variant: str
    image_id: str
    methods: tuple[str, ...]
    target: int | None  # None: the top-1 class of the trained (served) model
    seed: int
    # the method objects of ``methods``, built once by the request's dependency (server.deps.sanity_key)
    saliency: tuple[SaliencyMethod, ...] = field(default=(), compare=False, repr=False)


@dataclass
class SanityResult:
    """``maps[method]``: (steps+1)×H×W display maps in [0, 1], row 0 the original model's."""

    target: int
    label: str
    units: list[Unit]  # in cascade order: units[0] is randomised first (nearest the output)
    maps: dict[str, np.ndarray]
    scores: list[dict[str, dict[str, Any]]]  # per step (1…n): method → {"spearman", "ssim", "flat"}
    checks: dict[str, dict[str, Any]]

    @property
    def nbytes(self) -> int:
        return sum(int(m.nbytes) for m in self.maps.values()) + 1024 * len(self.scores)


Report = Callable[[int, str, str], None]  # (maps done, step label, method) — raises WorkCancelled when cancelled


def _map(loaded: LoadedModel, batch: torch.Tensor, method: SaliencyMethod, target: int,
         cancelled: Callable[[], bool]) -> np.ndarray:
    def progress(done: int, total: int) -> None:
        if cancelled():
            raise WorkCancelled()

    explanation = method.explain(loaded, batch, None, [target], progress)
    return explanation.maps[0].values.numpy().astype(np.float32)


def run_cascade(loaded: LoadedModel, batch: torch.Tensor, saliency: tuple[SaliencyMethod, ...], target: int | None,
                seed: int, max_steps: int, report: Report | None = None, admit: Admit | None = None,
                label: str = "trust/sanity", cancelled: Callable[[], bool] = lambda: False) -> SanityResult:
    """The whole check on a private copy of ``loaded``'s model (``batch`` 1×C×H×W on its device); each map
    is admitted as heavy work labelled ``<label>/<method>``."""
    twin = LoadedModel(loaded.entry, loaded.variant, private_copy(loaded.module), loaded.device,
                       loaded.preprocess_fn, catalog=loaded.catalog)
    if target is None:
        with torch.inference_mode():
            target = int(twin.module(batch)[0].argmax())
    units = list(reversed(cascade_units(twin.module, max_steps)))
    if not units:
        raise ApiError(422, "nothing_to_randomise", f"{loaded.entry.id} has no parameterised layers to randomise.")
    methods = [method.name for method in saliency]
    rows: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    done = 0

    def all_maps(step_label: str) -> None:
        nonlocal done
        for method in saliency:
            if cancelled():
                raise WorkCancelled()
            with admit(f"{label}/{method.name}", "heavy") if admit is not None else nullcontext():
                rows[method.name].append(_map(twin, batch, method, target, cancelled))
            done += 1
            if report is not None:
                report(done, step_label, method.name)

    all_maps("original")
    scores: list[dict[str, dict[str, Any]]] = []
    for step, unit in enumerate(units, start=1):
        randomise_step(twin.module, unit, seed, step)
        all_maps(unit.label)
        scores.append({m: compare(rows[m][0], rows[m][-1]) for m in methods})
    checks = {m.name: verdict(m.title, [s[m.name]["spearman"] for s in scores], len(units)) for m in saliency}
    labels = loaded.entry.categories
    return SanityResult(target, labels[target] if target < len(labels) else str(target), units,
                        {m: np.stack(r) for m, r in rows.items()}, scores, checks)


def strip_png(maps: np.ndarray, colormap: Callable[[np.ndarray], np.ndarray], gap: int = 2) -> bytes:
    """One PNG with the maps side by side (step 0 first), ``gap`` white pixels between them."""
    count, height, width = maps.shape
    strip = np.full((height, count * width + (count - 1) * gap, 3), 255, dtype=np.uint8)
    for i in range(count):
        left = i * (width + gap)
        strip[:, left:left + width] = colormap(maps[i])
    buf = io.BytesIO()
    Image.fromarray(strip, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


class SanityChecks:
    """sanity.json's jobs and results."""

    def __init__(self, inputs: ModelInputs, jobs: Jobs, cache: ResultCache[Any],
                 admit: Admit, max_steps: int) -> None:
        self.inputs = inputs
        self.jobs = jobs
        self.cache = cache
        self.admit = admit
        self.max_steps = max_steps

    @staticmethod
    def _cache_key(key: SanityKey) -> tuple[Any, ...]:
        return ("sanity", key)

    def result(self, key: SanityKey) -> SanityResult | None:
        return self.cache.get(self._cache_key(key))

    def finished(self, key: SanityKey) -> SanityResult:
        """The result, or 404 ``not_computed`` while there is none (sanity.json starts the run)."""
        found = self.result(key)
        if found is None:
            raise ApiError(404, "not_computed", "This sanity check has not been run yet (or was evicted); "
                                                "GET sanity.json starts it.")
        return found

    def start(self, loaded: LoadedModel, key: SanityKey) -> tuple[SanityResult | None, Job | None]:
        """The result when ready, else the job computing it (started on first ask)."""
        found = self.result(key)
        if found is not None:
            return found, None
        job_key = self._cache_key(key)
        existing = self.jobs.get(job_key)
        finished = getattr(existing, "result", None)  # a queue worker's result: this replica keeps it
        if finished is not None:
            self.cache.put(job_key, finished)
            return finished, None
        if existing is not None and existing.state in ("failed", "cancelled", "done"):
            self.jobs.forget(job_key)
            if existing.state == "failed":
                raise ApiError(422, "sanity_failed", f"The sanity check failed: {existing.error}. Asking again retries.")
        batch = self.inputs.batch(loaded, key.image_id)
        label = f"trust/sanity/{loaded.entry.id}"

        def run(job: Job) -> None:
            def report(done: int, step: str, method: str) -> None:
                job.progress(done, step=step, method=method)

            result = run_cascade(loaded, batch, key.saliency, key.target, key.seed, self.max_steps, report,
                                 admit=self.admit, label=label, cancelled=job.cancel_event.is_set)
            self.cache.put(job_key, result)

        units = len(cascade_units(loaded.module, self.max_steps))
        task = None
        if loaded.entry.family in SHAREABLE_FAMILIES:
            task = Task("sanity", {"model": loaded.entry.id, "weights": loaded.variant, "methods": key.methods,
                                   "target": key.target, "seed": key.seed, "max_steps": self.max_steps,
                                   "batch": batch.detach().cpu().numpy()})
        job = self.jobs.submit(job_key, run, total=(units + 1) * len(key.methods), task=task, info={"steps": units})
        return None, job

    def cancel(self, key: SanityKey) -> dict[str, Any]:
        job = self.jobs.cancel(self._cache_key(key))
        if job is not None:
            return job.as_json()
        return {"state": "done" if self.result(key) is not None else "missing", "progress": {"done": 0, "total": 0}}


def sanity_task(context: WorkerContext, params: dict[str, Any], job: Any) -> SanityResult:
    """The check on a queue worker (``job_queue.TASKS``); the model input travels in the job."""
    loaded = context.runtime.load(params["model"], params["weights"])
    batch = torch.from_numpy(params["batch"]).to(loaded.device)

    def report(done: int, step: str, method: str) -> None:
        job.progress(done, step=step, method=method)

    from server.services.saliency.methods import get_method

    saliency = tuple(get_method(name) for name in params["methods"])
    return run_cascade(loaded, batch, saliency, params["target"], params["seed"], params["max_steps"],
                       report, cancelled=job.cancel_event.is_set)
