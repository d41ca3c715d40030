"""Saliency for stored images: the request key, a byte-bounded result cache, and progress of long runs.

Every view is a GET whose URL holds the full state, so the same key always gives the same map: results
are cached by key (model, weights variant, image, method, layer, target) within a byte budget. The top-k
computation files each class's map under the key a single-class request would use, so the page's k
overlay images after one ``topk.json`` cost nothing more.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from server.errors import ApiError
from server.services.image_store import ImageStore
from server.services.model_inputs import input_batch
from server.services.model_runtime import LoadedModel
from server.services.saliency.base import Explanation, Progress, TopK
from server.services.saliency.methods import get_method
from server.services.saliency.topk import predictions_with_saliency

CACHE_BUDGET_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class SaliencyKey:
    """Everything a saliency map depends on; ``layer`` is None for methods that use no layer."""

    model: str
    variant: str
    image_id: str
    method: str
    layer: str | None
    target: int | None  # None: the top-1 class


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


def make_key(loaded: LoadedModel, image_id: str, method: str, layer: str | None, target: int | None) -> SaliencyKey:
    """Validate method, layer and target (cheap: no model work) and build the cache key."""
    saliency = get_method(method)
    layer_name = None
    if saliency.uses_layer:
        layer_name = layer or loaded.entry.target_layer
        loaded.layer(layer_name)  # 404 unknown_layer
    if target is not None and not 0 <= target < loaded.entry.num_classes:
        raise ApiError(  # a class the model does not have: 404, like an unknown layer
            404,
            "invalid_target",
            f"target must be a class index from 0 to {loaded.entry.num_classes - 1}; got {target}.",
        )
    return SaliencyKey(loaded.entry.id, loaded.variant, image_id, method, layer_name, target)


class ResultCache:
    """LRU of SaliencyMaps within a byte budget."""

    def __init__(self, budget_bytes: int = CACHE_BUDGET_BYTES) -> None:
        self.budget_bytes = budget_bytes
        self._items: OrderedDict[SaliencyKey, SaliencyMap] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: SaliencyKey) -> SaliencyMap | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def put(self, key: SaliencyKey, value: SaliencyMap) -> None:
        if value.nbytes > self.budget_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = value
            self._bytes += value.nbytes
            while self._bytes > self.budget_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= evicted.nbytes

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)


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


class SaliencyMaps:
    """Saliency maps of stored images: each result cached under its key (checked once, here), each
    computation run under the work limiter, and the progress of long runs visible to the page."""

    def __init__(self, store: ImageStore, admit: Callable[[], AbstractContextManager[Any]],
                 cache: ResultCache | None = None) -> None:
        self.store = store
        self.admit = admit
        self.cache = cache if cache is not None else ResultCache()
        self.progress = ProgressBoard()

    def map(self, loaded: LoadedModel, key: SaliencyKey) -> SaliencyMap:
        """The map for ``key``, computed when it is not cached."""
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        batch = input_batch(loaded, self.store, key.image_id)
        saliency = get_method(key.method)
        targets = [key.target] if key.target is not None else None
        with self.admit():
            try:
                explanation = saliency.explain(loaded, batch, key.layer, targets or TopK(1), self.progress.reporter(key))
            finally:
                self.progress.finish(key)
        (result,) = _maps(loaded, explanation)
        self.cache.put(key, result)
        if key.target is None:  # also answer the explicit-target URL of the same map
            self.cache.put(_with_target(key, result.target), result)
        return result

    def top_k(self, loaded: LoadedModel, key: SaliencyKey, k: int) -> tuple[list[dict[str, Any]], list[SaliencyMap]]:
        """Predictions and maps of the top-``k`` classes in one pass; each map is cached under its class key."""
        batch = input_batch(loaded, self.store, key.image_id)
        with self.admit():
            try:
                answer = predictions_with_saliency(loaded, batch, key.layer, k, key.method, self.progress.reporter(key))
            finally:
                self.progress.finish(key)
        maps = _maps(loaded, answer.explanation)
        for result in maps:
            self.cache.put(_with_target(key, result.target), result)
        if maps:
            self.cache.put(_with_target(key, None), maps[0])
        return answer.predictions, maps


def _with_target(key: SaliencyKey, target: int | None) -> SaliencyKey:
    return SaliencyKey(key.model, key.variant, key.image_id, key.method, key.layer, target)
