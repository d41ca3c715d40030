"""Predictions and the saliency maps of the top-k classes from one pass.

For Grad-CAM (and the other gradient CAMs) this is: ONE forward pass with the target layer's output made
an autograd leaf, the softmax of its logits for the predictions, and ONE batched backward
(``torch.autograd.grad(..., is_grads_batched=True)``) from the k class scores to that layer only — no
parameter gradients, no second forward. The cost is about one forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from server.services.model_runtime import LoadedModel
from server.services.predictions import predictions_from_logits
from server.services.saliency.base import Explanation, Progress, TopK
from server.services.saliency.methods import DEFAULT_METHOD, get_method

DEFAULT_K = 5


@dataclass
class TopKSaliency:
    """``predictions`` as the predictions endpoint gives them; ``explanation`` has one map per class,
    in the same order."""

    predictions: list[dict[str, Any]]
    explanation: Explanation


def predictions_with_saliency(
    loaded: LoadedModel,
    batch: torch.Tensor,
    layer: str | None = None,
    k: int = DEFAULT_K,
    method: str = DEFAULT_METHOD,
    progress: Progress | None = None,
) -> TopKSaliency:
    """The top-``k`` predictions for ``batch`` (1×C×H×W) and each one's saliency map."""
    saliency = get_method(method)
    layer_name = (layer or loaded.entry.target_layer) if saliency.uses_layer else None
    explanation = saliency.explain(loaded, batch, layer_name, TopK(k), progress)
    predictions = predictions_from_logits(loaded, explanation.logits, len(explanation.targets))
    # Ties in the logits could order the two lists differently: follow the maps' order.
    by_index = {p["index"]: p for p in predictions}
    ordered = [by_index.get(t) or _prediction(loaded, explanation.logits, t) for t in explanation.targets]
    return TopKSaliency(ordered, explanation)


def _prediction(loaded: LoadedModel, logits: torch.Tensor, index: int) -> dict[str, Any]:
    probs = torch.softmax(logits.float(), dim=-1)
    labels = loaded.entry.categories
    return {
        "index": index,
        "label": labels[index] if index < len(labels) else str(index),
        "probability": float(probs[index]),
    }
