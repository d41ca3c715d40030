"""The current model's prediction on each submission, through the app's own prediction path
(:class:`ModelOutputs`: the shared batcher, the scheduler's admission and the one result cache): the wall is
asked for again and again while a class submits, and each (model, weights, image) needs one forward pass."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from server.errors import ApiError
from server.services.runtime.model_runtime import LoadedModel, ModelRuntime
from server.services.runtime.outputs import ModelOutputs, predictions_from_logits

TOP_K = 3


class WallPredictions:
    def __init__(self, runtime: ModelRuntime, outputs: ModelOutputs, fan_out: int = 8) -> None:
        self.runtime = runtime
        self.outputs = outputs
        self._pool = ThreadPoolExecutor(max_workers=max(1, fan_out), thread_name_prefix="wall-predictions")

    def predict(self, model: str, weights: str, image_ids: list[str]) -> dict[str, Any]:
        """``{"model", "weights_used", "results": {image_id: {"predictions": [...]} | {"error": ...}}}``.

        Blocking (forward passes): call it from a worker thread. Images not cached yet are predicted by a
        few threads at once, so the shared batcher runs them as batches. A model that cannot run (unknown
        id, missing weights) answers every image with the same error instead of failing the whole wall.
        """
        try:
            loaded = self.runtime.load(model, weights)
        except ApiError as exc:
            return {"model": model, "weights_used": None, "error": exc.message,
                    "results": {image_id: {"error": exc.message} for image_id in image_ids}}
        results: dict[str, Any] = {}
        missing = []
        for image_id in image_ids:
            hit = self.outputs.cached_logits(loaded, image_id)
            if hit is None:
                missing.append(image_id)
            else:
                results[image_id] = {"predictions": predictions_from_logits(loaded, hit, TOP_K)}
        futures = {image_id: self._pool.submit(self._predict_one, loaded, image_id) for image_id in missing}
        overloaded: ApiError | None = None
        for image_id, future in futures.items():
            try:
                results[image_id] = {"predictions": future.result()}
            except ApiError as exc:
                if exc.status == 503:
                    overloaded = exc  # the server is overloaded: the client retries the whole wall
                results[image_id] = {"error": exc.message}
        if overloaded is not None:
            raise overloaded
        return {"model": loaded.entry.id, "weights_used": loaded.variant,
                "results": {image_id: results[image_id] for image_id in image_ids}}

    def require_image(self, image_id: str) -> None:
        """Raise the store's 404 unless the image is stored here (or in the shared image directory)."""
        self.outputs.inputs.store.open_image(image_id)

    def _predict_one(self, loaded: LoadedModel, image_id: str) -> list[dict[str, Any]]:
        return predictions_from_logits(loaded, self.outputs.logits(loaded, image_id), TOP_K)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
