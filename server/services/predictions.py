"""Class scores of stored images: one forward result per (model, weights, image), shared.

The logits of an image are cached once computed, whoever computed them: a prediction (batched with
concurrent predictions for the same model), a feature-map capture or a saliency pass all file the
model's output here, and predictions, the softmax trace and the saliency top-k read it.
"""

from __future__ import annotations

import torch

from server.services.batching import PredictionBatcher
from server.services.cache import ResultCache
from server.services.model_inputs import ModelInputs
from server.services.model_runtime import LoadedModel


class ModelOutputs:
    """The model's output (logits, float32 on the CPU, 1-D) per (model, variant, image)."""

    def __init__(self, inputs: ModelInputs, batcher: PredictionBatcher, budget_bytes: int = 16 * 1024 * 1024) -> None:
        self.inputs = inputs
        self.batcher = batcher
        self.cache: ResultCache[torch.Tensor] = ResultCache("logits", budget_bytes)

    @staticmethod
    def key(loaded: LoadedModel, image_id: str) -> tuple[str, str, str]:
        return (loaded.entry.id, loaded.variant, image_id)

    def logits(self, loaded: LoadedModel, image_id: str) -> torch.Tensor:
        """The logits for the image, computed (batched with concurrent requests) on a miss."""
        return self.cache.get_or_compute(
            self.key(loaded, image_id),
            lambda: self.batcher.outputs(loaded, self.inputs.batch(loaded, image_id))[0].contiguous(),
        )

    def remember(self, loaded: LoadedModel, image_id: str, logits: torch.Tensor | None) -> None:
        """File logits another pass computed anyway (1×N or N; anything else is ignored)."""
        if logits is None or not isinstance(logits, torch.Tensor):
            return
        row = logits.detach().float().cpu()
        if row.dim() == 2 and row.shape[0] == 1:
            row = row[0]
        if row.dim() == 1:
            self.cache.put(self.key(loaded, image_id), row.contiguous())


def predictions_from_logits(loaded: LoadedModel, logits: torch.Tensor, k: int) -> list[dict[str, object]]:
    probs = torch.softmax(logits.detach().float().cpu(), dim=-1)
    k = max(1, min(k, probs.numel()))
    values, indices = torch.topk(probs, k)
    labels = loaded.entry.categories
    return [
        {"index": int(i), "label": labels[int(i)] if int(i) < len(labels) else str(int(i)), "probability": float(p)}
        for p, i in zip(values.tolist(), indices.tolist())
    ]
