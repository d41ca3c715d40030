"""Saliency for stored images: the request key, a byte-bounded result cache, and progress of long runs.

Every view is a GET whose URL holds the full state, so the same key always gives the same map: results
are cached by key (model, weights variant, image, method, layer, target) within a byte budget. Every
computation files each class's map under the key a single-class request would use, so the page's k
overlay images after one ``topk.json`` cost nothing more, and a ``topk.json`` after them neither.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from server.errors import ApiError
from server.services.runtime.cache import ResultCache
from server.services.runtime.inputs import ModelInputs
from server.services.runtime.model_runtime import LoadedModel, ModelLayer
from server.services.runtime.outputs import ModelOutputs
from server.services.saliency.base import Explanation, Progress, SaliencyMethod, Targets, TopK
from server.services.work.cancel import checkpoint
from server.services.work.scheduler import Admit


@dataclass(frozen=True)
class SaliencyKey:
    """Everything a saliency map depends on; ``layer`` is None for methods that use no layer."""

    model: str
    variant: str
    image_id: str
    method: str
    layer: str | None
    target: int | None  # None: the top-1 class
    # the method object, built once at the edge (``server.deps.SaliencyMethodDep``); not part of the identity
    saliency: SaliencyMethod | None = field(default=None, compare=False, repr=False)

    @property
    def method_object(self) -> SaliencyMethod:
        assert self.saliency is not None, "keys are made by make_key(), with the method resolved"
        return self.saliency


@dataclass(frozen=True)
class SaliencyMap:
    """One class's map: ``values`` H×W in [0, 1] (0 ↔ raw ``low``, 1 ↔ raw ``high``), ``raw`` the signed map."""

    method: str
    layer: str | None
    target: int
    label: str
    probability: float
    logit: float
    values: np.ndarray
    raw: np.ndarray
    low: float
    high: float

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes + self.raw.nbytes)


def make_key(loaded: LoadedModel, image_id: str, saliency: SaliencyMethod, layer: ModelLayer | None,
             target: int | None) -> SaliencyKey:
    """The cache key of a request whose method, layer (None: a method without one) and target were resolved
    and checked once, by the dependencies in ``server.deps``."""
    layer_name = layer.name if layer is not None and saliency.uses_layer else None
    return SaliencyKey(loaded.entry.id, loaded.variant, image_id, saliency.name, layer_name, target, saliency)


class ProgressBoard:
    """Progress of the runs in flight, by (model, variant, image, method, layer), for the page to poll."""

    def __init__(self) -> None:
        self._runs: dict[tuple[Any, ...], tuple[int, int]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def run_key(key: SaliencyKey) -> tuple[Any, ...]:
        return (key.model, key.variant, key.image_id, key.method, key.layer)

    def reporter(self, key: SaliencyKey) -> Progress:
        run = self.run_key(key)

        def report(done: int, total: int) -> None:
            with self._lock:
                self._runs[run] = (done, total)

        return report

    def finish(self, key: SaliencyKey) -> None:
        with self._lock:
            self._runs.pop(self.run_key(key), None)

    def get(self, key: SaliencyKey) -> dict[str, Any]:
        with self._lock:
            state = self._runs.get(self.run_key(key))
        if state is None:
            return {"state": "idle", "done": 0, "total": 0}
        return {"state": "running", "done": state[0], "total": state[1]}


def _maps(loaded: LoadedModel, explanation: Explanation) -> list[SaliencyMap]:
    probs = torch.softmax(explanation.logits, dim=-1)
    labels = loaded.entry.categories
    out = []
    for i, target in enumerate(explanation.targets):
        scaled = explanation.maps[i]
        out.append(
            SaliencyMap(
                method=explanation.method,
                layer=explanation.layer,
                target=target,
                label=labels[target] if target < len(labels) else str(target),
                probability=float(probs[target]),
                logit=float(explanation.logits[target]),
                values=scaled.values.numpy().astype(np.float32),
                raw=explanation.raw[i].numpy().astype(np.float32),
                low=scaled.low,
                high=scaled.high,
            )
        )
    return out


SHARED_TOP_K = 5  # the first request for an image and layer also computes this many top classes


class SaliencyMaps:
    """Saliency maps of stored images: every result in one :class:`ResultCache` (single-flight, so
    concurrent identical requests share one computation), every computation under admission control, and
    the progress of long runs visible to the page (each progress report is also a cancellation checkpoint).

    The first request for an image, method and layer computes the top classes' maps in the same pass
    (plus the requested class) when the method makes extra classes cheap, so that the maps of the other
    top classes — which the page and API.md clients ask for next — are cache hits."""

    def __init__(self, inputs: ModelInputs, admit: Admit | None = None, outputs: ModelOutputs | None = None,
                 budget_bytes: int = 64 * 1024 * 1024) -> None:
        self.inputs = inputs
        self.admit = admit
        self.outputs = outputs
        self.cache: ResultCache[Any] = ResultCache("saliency", budget_bytes)
        self.progress = ProgressBoard()

    def _run(self, loaded: LoadedModel, key: SaliencyKey, targets: Targets, label: str) -> Explanation:
        batch = self.inputs.batch(loaded, key.image_id)
        saliency = key.method_object
        report = self.progress.reporter(key)

        def progress(done: int, total: int) -> None:
            report(done, total)
            checkpoint()  # a client that left (with nobody else waiting) stops the run here

        prior = "heavy" if saliency.heavy or (label == "topk" and saliency.family == "gradient") else "cheap"
        # a prediction's pass kept the graph from the default layer: Grad-CAMs there need no forward pass
        kept = self.outputs.graph(loaded, key.image_id, key.layer) if self.outputs and saliency.uses_layer else None
        if kept is not None:
            label += "/kept"
        with self.admit(f"saliency/{loaded.entry.id}/{key.method}/{label}", prior) if self.admit else nullcontext():
            try:
                explanation = saliency.explain(loaded, batch, key.layer, targets, progress, kept)
            finally:
                self.progress.finish(key)
        if self.outputs is not None:
            self.outputs.remember(loaded, key.image_id, explanation.logits)
        return explanation

    def _file(self, loaded: LoadedModel, key: SaliencyKey, explanation: Explanation, top: int) -> list[SaliencyMap]:
        """Cache every class's map under its own key, the top-1 under the no-target key, and the order of
        the top ``top`` classes (for top-k requests)."""
        maps = _maps(loaded, explanation)
        for result in maps:
            self.cache.put(_with_target(key, result.target), result)
        if maps and top >= 1:
            self.cache.put(_with_target(key, None), maps[0])
            self.cache.put(_order_key(key), tuple(m.target for m in maps[:top]))
        return maps

    def map(self, loaded: LoadedModel, key: SaliencyKey) -> SaliencyMap:
        """The map for ``key``, computed when it is not cached."""
        saliency = key.method_object
        for _ in range(3):
            hit = self.cache.get(key)
            if hit is not None:
                return hit
            if saliency.shares_targets:
                extra = () if key.target is None else (key.target,)
                targets: Targets = TopK(SHARED_TOP_K, extra)
                top = SHARED_TOP_K
            else:
                targets = [key.target] if key.target is not None else TopK(1)
                top = 1 if key.target is None else 0

            def compute(targets: Targets = targets, top: int = top) -> dict[int | None, SaliencyMap]:
                explanation = self._run(loaded, key, targets, "map")
                maps = self._file(loaded, key, explanation, top)
                found: dict[int | None, SaliencyMap] = {m.target: m for m in maps}
                if top >= 1 and maps:
                    found[None] = maps[0]
                return found

            # one run per image, method, layer (and class, when each class is its own run) at a time
            run = (*ProgressBoard.run_key(key), None if saliency.shares_targets else key.target)
            found = self.cache.get_or_compute(run, compute, keep=False)
            if key.target in found:
                return found[key.target]
        raise ApiError(503, "overloaded", "The server is busy (saliency runs); try again in a moment.",
                       {"Retry-After": "1"})

    def top_k(self, loaded: LoadedModel, key: SaliencyKey, k: int) -> tuple[list[dict[str, Any]], list[SaliencyMap]]:
        """Predictions and maps of the top-``k`` classes in one pass; each map is cached under its class key,
        and a later top-k (of at most as many classes) is answered from the cache."""
        order = self.cache.get(_order_key(key))
        if order is not None and len(order) >= k:
            maps = [self.cache.get(_with_target(key, t)) for t in order[:k]]
            if all(m is not None for m in maps):
                return _predictions(loaded, maps), maps  # type: ignore[arg-type]

        def compute() -> list[SaliencyMap]:
            explanation = self._run(loaded, key, TopK(k), "topk")
            return self._file(loaded, key, explanation, k)

        maps = self.cache.get_or_compute((*ProgressBoard.run_key(key), "top", k), compute, keep=False)
        return _predictions(loaded, maps), maps


def _predictions(loaded: LoadedModel, maps: list[SaliencyMap]) -> list[dict[str, Any]]:
    return [{"index": m.target, "label": m.label, "probability": m.probability} for m in maps]


def _order_key(key: SaliencyKey) -> tuple[Any, ...]:
    return (*ProgressBoard.run_key(key), "order")


def _with_target(key: SaliencyKey, target: int | None) -> SaliencyKey:
    return replace(key, target=target)
