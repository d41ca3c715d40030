"""Class scores of stored images: one forward result per (model, weights, image), shared.

The logits of an image are cached once computed, whoever computed them: a prediction (batched with
concurrent predictions for the same model), a feature-map capture or a saliency pass all file the
model's output here, and predictions, the softmax trace and the saliency top-k read it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from server.services.runtime.batching import PredictionBatcher
from server.services.runtime.cache import ResultCache
from server.services.runtime.hooks import LayerGraph
from server.services.runtime.inputs import ModelInputs
from server.services.runtime.model_runtime import LoadedModel
from server.services.saliency.layer_choice import default_layer


@dataclass(frozen=True)
class ForwardResult:
    """One image's forward pass: its logits (N, float32, CPU, no autograd graph)."""

    logits: torch.Tensor

    @property
    def nbytes(self) -> int:
        return self.logits.numel() * self.logits.element_size()


class ModelOutputs:
    """The model's output per (model, variant, image), from whichever pass computed it first.

    A prediction's pass keeps the graph from the model's default saliency layer (``target_layer``) to the
    logits: the Grad-CAMs a page asks for next, at that layer, then need no forward pass of their own —
    predictions plus the top-5 classes' maps cost about one forward pass and one short backward.

    The logits live in ``cache`` (no graph: a few KB each); the graphs in ``graphs``, each counted at what
    it really keeps alive (every tensor its pass saved, the whole batch's: its images share it), within its
    own, smaller budget — a graph is worth keeping only for the images a page is looking at now."""

    def __init__(self, inputs: ModelInputs, batcher: PredictionBatcher, budget_bytes: int = 16 * 1024 * 1024,
                 graph_budget_bytes: int = 32 * 1024 * 1024) -> None:
        self.inputs = inputs
        self.batcher = batcher
        self.cache: ResultCache[ForwardResult] = ResultCache("logits", budget_bytes)
        self.graphs: ResultCache[LayerGraph] = ResultCache("kept graphs", graph_budget_bytes)

    @staticmethod
    def key(loaded: LoadedModel, image_id: str) -> tuple[str, str, str]:
        return (loaded.entry.id, loaded.variant, image_id)

    def result(self, loaded: LoadedModel, image_id: str) -> ForwardResult:
        key = self.key(loaded, image_id)

        def compute() -> ForwardResult:
            batch = self.inputs.batch(loaded, image_id)
            out, graph = self.batcher.forward(loaded, batch, default_layer(loaded.entry))
            if graph is not None:
                self.graphs.put(key, graph)
            return ForwardResult(out[0].detach().contiguous())

        return self.cache.get_or_compute(key, compute)

    def logits(self, loaded: LoadedModel, image_id: str) -> torch.Tensor:
        """The logits for the image, computed (batched with concurrent requests) on a miss."""
        return self.result(loaded, image_id).logits

    def cached_logits(self, loaded: LoadedModel, image_id: str) -> torch.Tensor | None:
        """The logits when some pass computed them already (never computes)."""
        hit = self.cache.get(self.key(loaded, image_id))
        return None if hit is None else hit.logits

    def graph(self, loaded: LoadedModel, image_id: str, layer: str | None) -> LayerGraph | None:
        """The kept graph from ``layer`` for the image, when a pass kept one (never computes)."""
        hit = self.graphs.get(self.key(loaded, image_id))
        return hit if hit is not None and hit.layer == layer else None

    def remember(self, loaded: LoadedModel, image_id: str, logits: torch.Tensor | None) -> None:
        """File logits another pass computed anyway (1×N or N; anything else is ignored)."""
        if logits is None or not isinstance(logits, torch.Tensor):
            return
        row = logits.detach().float().cpu()
        if row.dim() == 2 and row.shape[0] == 1:
            row = row[0]
        key = self.key(loaded, image_id)
        if row.dim() == 1 and key not in self.cache:
            self.cache.put(key, ForwardResult(row.contiguous()))


def predictions_from_logits(loaded: LoadedModel, logits: torch.Tensor, k: int) -> list[dict[str, object]]:
    probs = torch.softmax(logits.detach().float().cpu(), dim=-1)
    k = max(1, min(k, probs.numel()))
    values, indices = torch.topk(probs, k)
    labels = loaded.entry.categories
    return [
        {"index": int(i), "label": labels[int(i)] if int(i) < len(labels) else str(int(i)), "probability": float(p)}
        for p, i in zip(values.tolist(), indices.tolist())
    ]
