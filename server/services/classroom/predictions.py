"""The current model's prediction on each submission, through the app's own prediction path (the shared
batcher and work limiter), with a bounded cache: the wall is asked for again and again while a class
submits, and each (model, weights, image) needs one forward pass, ever."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from server.errors import ApiError
from server.services.batching import PredictionBatcher
from server.services.image_store import ImageStore
from server.services.model_inputs import input_batch
from server.services.model_runtime import ModelRuntime
from server.services.predictions import predictions_from_logits

TOP_K = 3


class WallPredictions:
    def __init__(self, runtime: ModelRuntime, store: ImageStore, batcher: PredictionBatcher,
                 cache_items: int = 4096) -> None:
        self.runtime = runtime
        self.store = store
        self.batcher = batcher
        self._cache_items = cache_items
        self._cache: OrderedDict[tuple[str, str, str], list[dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def predict(self, model: str, weights: str, image_ids: list[str]) -> dict[str, Any]:
        """``{"model", "weights_used", "results": {image_id: {"predictions": [...]} | {"error": ...}}}``.

        Blocking (forward passes): call it from a worker thread. A model that cannot run (unknown id,
        missing weights) answers every image with the same error instead of failing the whole wall.
        """
        try:
            loaded = self.runtime.load(model, weights)
        except ApiError as exc:
            return {"model": model, "weights_used": None, "error": exc.message,
                    "results": {image_id: {"error": exc.message} for image_id in image_ids}}
        results: dict[str, Any] = {}
        for image_id in image_ids:
            key = (loaded.entry.id, loaded.variant, image_id)
            with self._lock:
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
            if hit is None:
                try:
                    logits = self.batcher.outputs(loaded, input_batch(loaded, self.store, image_id))
                except ApiError as exc:
                    if exc.status == 503:
                        raise  # the server is overloaded: the client retries the whole wall
                    results[image_id] = {"error": exc.message}
                    continue
                hit = predictions_from_logits(loaded, logits[0], TOP_K)
                with self._lock:
                    self._cache[key] = hit
                    while len(self._cache) > self._cache_items:
                        self._cache.popitem(last=False)
            results[image_id] = {"predictions": hit}
        return {"model": loaded.entry.id, "weights_used": loaded.variant, "results": results}
