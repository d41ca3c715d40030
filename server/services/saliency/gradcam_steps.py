"""Grad-CAM taken apart for teaching: the numbers behind one class's map at one layer.

For class c and layer output A (K channels, h×w), Grad-CAM computes

    α_k = mean over i,j of ∂y^c/∂A^k_ij        (one weight per channel: the averaged gradient)
    S   = Σ_k α_k A^k                          (the weighted sum, signed: the API's saliency/raw.npy)
    L   = ReLU(S)                              (only evidence *for* the class; then upsampled for display)

This module returns every step — all K weights, the channels that contribute most to S, S and ReLU(S) —
from one forward and one backward pass through the shared hook module (``hooks.capture_layer``), so the
page can draw the formula with the real numbers. Results are cached by key within a byte budget.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from server.services.runtime.cache import ResultCache
from server.services.runtime.hooks import capture_layer
from server.services.runtime.inputs import ModelInputs
from server.services.runtime.model_runtime import LoadedModel, ModelLayer
from server.services.saliency.base import TopK, check_logits, class_gradients, resolve_targets, spatial_activation
from server.services.work.scheduler import Admit

MAX_TOP = 32


@dataclass(frozen=True)
class StepsKey:
    model: str
    variant: str
    image_id: str
    layer: str
    target: int | None  # None: the top-1 class
    # the layer's module, resolved once at the edge; not part of the key's identity
    resolved: ModelLayer | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class GradCamSteps:
    """Every number behind one Grad-CAM map (float32 arrays on the CPU)."""

    layer: str
    target: int
    label: str
    logit: float
    probability: float
    alphas: np.ndarray  # K: α_k, channel order
    activation: np.ndarray  # K×h×w: A^k
    weighted_sum: np.ndarray  # h×w: Σ_k α_k A^k (signed)

    @property
    def relu(self) -> np.ndarray:
        return np.maximum(self.weighted_sum, 0.0)

    @property
    def contributions(self) -> np.ndarray:
        """Each channel's share of the weighted sum, summed over positions: α_k · Σ_ij A^k_ij."""
        return self.alphas * self.activation.sum(axis=(1, 2))

    def top_channels(self, top: int) -> np.ndarray:
        """The ``top`` channels with the largest |α_k · Σ_ij A^k_ij|, largest first (ties by index)."""
        contrib = np.abs(self.contributions.astype(np.float64))
        order = np.lexsort((np.arange(contrib.size), -contrib))
        return order[: max(0, min(top, contrib.size))]

    @property
    def nbytes(self) -> int:
        return int(self.alphas.nbytes + self.activation.nbytes + self.weighted_sum.nbytes)

    def describe(self, top: int) -> dict[str, Any]:
        """The JSON answer: the weights (all, and sorted), the top channels, and each step's range."""
        k = self.alphas.size
        chosen = self.top_channels(top)
        by_alpha = np.lexsort((np.arange(k), -self.alphas.astype(np.float64)))
        sums = self.activation.sum(axis=(1, 2))
        relu = self.relu
        rest = np.setdiff1d(np.arange(k), chosen)
        rest_sum = (self.alphas[rest, None, None] * self.activation[rest]).sum(axis=0) if rest.size else None
        return {
            "layer": self.layer,
            "target": self.target,
            "label": self.label,
            "logit": self.logit,
            "probability": self.probability,
            "shape": list(self.activation.shape),
            "alphas": [float(a) for a in self.alphas],
            "alpha_order": [int(i) for i in by_alpha],
            "top": [
                {
                    "channel": int(c),
                    "alpha": float(self.alphas[c]),
                    "activation_sum": float(sums[c]),
                    "contribution": float(self.contributions[c]),
                    "min": float(self.activation[c].min()),
                    "max": float(self.activation[c].max()),
                }
                for c in chosen
            ],
            "rest": {
                "channels": int(rest.size),
                "contribution": float(self.contributions[rest].sum()) if rest.size else 0.0,
                "min": float(rest_sum.min()) if rest_sum is not None else 0.0,
                "max": float(rest_sum.max()) if rest_sum is not None else 0.0,
            },
            "weighted_sum": {"min": float(self.weighted_sum.min()), "max": float(self.weighted_sum.max())},
            "relu": {"min": float(relu.min()), "max": float(relu.max()),
                     "positive_fraction": float((self.weighted_sum > 0).mean())},
        }

    def stack(self, top: int) -> np.ndarray:
        """(top + 2)×h×w float32: the top channels' A^k (in ``top_channels`` order), then S, then ReLU(S)."""
        chosen = self.top_channels(top)
        return np.concatenate([self.activation[chosen], self.weighted_sum[None], self.relu[None]]).astype(np.float32)


def compute_steps(loaded: LoadedModel, batch: torch.Tensor, resolved: ModelLayer, target: int | None) -> GradCamSteps:
    """One forward (layer output captured as a grad leaf) and one backward of the class score to it."""
    layer, module = resolved.name, resolved.module
    with torch.enable_grad(), capture_layer(loaded, module) as captured:
        logits = check_logits(loaded.module(batch), loaded.entry.id)
    activation = spatial_activation(captured.activation, captured.shapes, layer, "Grad-CAM")
    (chosen,) = resolve_targets(logits, [target] if target is not None else TopK(1))
    with torch.enable_grad():
        gradients = class_gradients(logits, activation, [chosen])  # 1×K×h×w
    a = activation.detach()[0].float()
    alphas = gradients[0].float().mean(dim=(-2, -1))
    weighted = (alphas[:, None, None] * a).sum(dim=0)
    scores = logits.detach().float()[0]
    labels = loaded.entry.categories
    return GradCamSteps(
        layer=layer,
        target=chosen,
        label=labels[chosen] if chosen < len(labels) else str(chosen),
        logit=float(scores[chosen]),
        probability=float(torch.softmax(scores, dim=-1)[chosen]),
        alphas=alphas.cpu().numpy().astype(np.float32),
        activation=a.cpu().numpy().astype(np.float32),
        weighted_sum=weighted.cpu().numpy().astype(np.float32),
    )




class GradCamStepsService:
    """Grad-CAM steps of stored images: one :class:`ResultCache` (single-flight, byte budget from Settings),
    every computation under the scheduler's admission like the saliency maps."""

    def __init__(self, inputs: ModelInputs, admit: Admit | None = None, budget_bytes: int = 32 * 1024 * 1024) -> None:
        self.inputs = inputs
        self.admit = admit
        self.cache: ResultCache[GradCamSteps] = ResultCache("gradcam_steps", budget_bytes)

    @property
    def budget_bytes(self) -> int:
        return self.cache.budget_bytes

    @property
    def nbytes(self) -> int:
        return self.cache.nbytes

    @staticmethod
    def key(loaded: LoadedModel, image_id: str, layer: ModelLayer, target: int | None) -> StepsKey:
        """The cache key of a layer and target already resolved and checked (``server.deps``)."""
        return StepsKey(loaded.entry.id, loaded.variant, image_id, layer.name, target, layer)

    def steps(self, loaded: LoadedModel, key: StepsKey) -> GradCamSteps:
        def compute() -> GradCamSteps:
            batch = self.inputs.batch(loaded, key.image_id)
            label = f"gradcam-steps/{loaded.entry.id}/{key.layer}"
            with self.admit(label, "cheap") if self.admit else nullcontext():
                assert key.resolved is not None, "keys are made by key(), with the layer resolved"
                return compute_steps(loaded, batch, key.resolved, key.target)

        result = self.cache.get_or_compute(key, compute)
        if key.target is None:  # the same numbers answer the explicit-target URL
            self.cache.put(StepsKey(key.model, key.variant, key.image_id, key.layer, result.target), result)
        return result
