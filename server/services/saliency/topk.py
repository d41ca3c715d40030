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

from server.services.runtime.model_runtime import LoadedModel
from server.services.runtime.outputs import predictions_from_logits
from server.services.saliency.base import Explanation, InputAttributionMethod, Progress, SaliencyMethod, TopK
from server.services.saliency.gradients import Occlusion
from server.services.saliency.layer_choice import saliency_layer
from server.services.saliency.methods import DEFAULT_METHOD, get_method

DEFAULT_K = 5
MAX_K = 20
# Gradient-family methods hold T×(samples)×C×H×W gradients and a T-fold batched backward: their memory grows
# with the number of classes. They run TARGETS_PER_PASS classes at a time, so k only costs time, not memory.
TARGETS_PER_PASS = 4


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
    layer_name = saliency_layer(loaded, layer).name if saliency.uses_layer else None
    explanation = _explain_top(saliency, loaded, batch, layer_name, k, progress)
    predictions = predictions_from_logits(loaded, explanation.logits, len(explanation.targets))
    # Ties in the logits could order the two lists differently: follow the maps' order.
    by_index = {p["index"]: p for p in predictions}
    ordered = [by_index.get(t) or _prediction(loaded, explanation.logits, t) for t in explanation.targets]
    return TopKSaliency(ordered, explanation)


def _explain_top(saliency: SaliencyMethod, loaded: LoadedModel, batch: torch.Tensor, layer: str | None, k: int,
                 progress: Progress | None) -> Explanation:
    # Occlusion's passes are shared by every class and its per-class memory is one H×W map: no need.
    if not isinstance(saliency, InputAttributionMethod) or isinstance(saliency, Occlusion) or k <= TARGETS_PER_PASS:
        return saliency.explain(loaded, batch, layer, TopK(k), progress)
    passes = -(-min(k, loaded.entry.num_classes) // TARGETS_PER_PASS)

    def stage(index: int) -> Progress | None:
        if progress is None:
            return None
        return lambda done, total: progress(index * total + done, passes * total)

    first = saliency.explain(loaded, batch, layer, TopK(TARGETS_PER_PASS), stage(0))
    rest = [int(i) for i in torch.topk(first.logits.reshape(-1), min(k, first.logits.numel())).indices]
    rest = [t for t in rest if t not in first.targets]
    parts = [first]
    for index, start in enumerate(range(0, len(rest), TARGETS_PER_PASS), start=1):
        parts.append(saliency.explain(loaded, batch, layer, rest[start:start + TARGETS_PER_PASS], stage(index)))
    return Explanation(first.method, first.layer, first.logits, [t for p in parts for t in p.targets],
                       torch.cat([p.attributions for p in parts]), torch.cat([p.raw for p in parts]),
                       [m for p in parts for m in p.maps])


def _prediction(loaded: LoadedModel, logits: torch.Tensor, index: int) -> dict[str, Any]:
    probs = torch.softmax(logits.float(), dim=-1)
    labels = loaded.entry.categories
    return {
        "index": index,
        "label": labels[index] if index < len(labels) else str(index),
        "probability": float(probs[index]),
    }
