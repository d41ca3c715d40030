"""Class probabilities: one forward pass, softmax over the logits, the top k."""

from __future__ import annotations

import torch

from server.services.model_runtime import LoadedModel


def top_k_predictions(loaded: LoadedModel, batch: torch.Tensor, k: int) -> list[dict[str, object]]:
    with torch.inference_mode():
        logits = loaded.module(batch)
    return predictions_from_logits(loaded, logits[0], k)


def predictions_from_logits(loaded: LoadedModel, logits: torch.Tensor, k: int) -> list[dict[str, object]]:
    probs = torch.softmax(logits.detach().float().cpu(), dim=-1)
    k = max(1, min(k, probs.numel()))
    values, indices = torch.topk(probs, k)
    labels = loaded.entry.categories
    return [
        {"index": int(i), "label": labels[int(i)] if int(i) < len(labels) else str(int(i)), "probability": float(p)}
        for p, i in zip(values.tolist(), indices.tolist())
    ]
