"""Gradient-family methods: attributions over the input pixels (T×C×H×W), one step each over the base.

The model's parameters are frozen, so differentiating with respect to the input computes no weight
gradients. Sampling methods (SmoothGrad, integrated gradients, occlusion) run their extra inputs in
batches and report progress per batch.
"""

from __future__ import annotations

import numpy as np
import torch

from server.services.runtime.hooks import guided_relus
from server.services.runtime.model_runtime import LoadedModel
from server.services.saliency.base import InputAttributionMethod, Progress, batches, check_logits, class_gradients
from server.services.saliency.cams import GradCAM
from server.services.saliency.scaling import upsample

SAMPLE_BATCH = 16


def _input_gradients(loaded: LoadedModel, batch: torch.Tensor, targets: list[int], guided: bool) -> torch.Tensor:
    x = batch.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        if guided:
            with guided_relus(loaded):
                logits = check_logits(loaded.module(x), loaded.entry.id)
        else:
            logits = check_logits(loaded.module(x), loaded.entry.id)
        # The guided tensor hooks live on this request's graph, so the backward may run after the
        # module hooks are gone (and without the model's lock).
        return class_gradients(logits, x, targets)


def _sample_gradients(
    loaded: LoadedModel, samples: torch.Tensor, targets: list[int], progress: Progress | None
) -> torch.Tensor:
    """∂logit[t]/∂input for each target t and each row of ``samples`` (N×C×H×W): T×N×C×H×W.

    Each batch of samples runs forward once; the T targets share one batched backward.
    """
    grads = torch.empty((len(targets), *samples.shape), dtype=samples.dtype, device=samples.device)
    for start, stop in batches(samples.shape[0], SAMPLE_BATCH):
        x = samples[start:stop].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logits = loaded.module(x)
            # Rows are independent, so the gradient of a column's sum is each row's own gradient.
            if len(targets) == 1:
                (grads[0, start:stop],) = torch.autograd.grad(logits[:, targets[0]].sum(), x)
            else:
                one_hot = torch.zeros((len(targets), *logits.shape), dtype=logits.dtype, device=logits.device)
                one_hot[torch.arange(len(targets)), :, torch.tensor(targets)] = 1.0
                (grads[:, start:stop],) = torch.autograd.grad(logits, x, one_hot, is_grads_batched=True)
        if progress is not None:
            progress(stop, samples.shape[0])
    return grads


class VanillaGradient(InputAttributionMethod):
    """Simonyan et al. 2014: ∂y^c/∂x, the class score's sensitivity to each input value."""

    name = "gradient"
    title = "Vanilla gradient"
    summary = "How much each input pixel would change the class score (∂y^c/∂x)."

    def input_attributions(self, loaded, batch, layer, targets, progress):
        return _input_gradients(loaded, batch, targets, guided=False)


class GuidedBackprop(InputAttributionMethod):
    """Springenberg et al. 2015: backpropagate through ReLUs only where input and gradient are positive."""

    name = "guided-backprop"
    title = "Guided backprop"
    summary = "Gradient with negative signals stopped at every ReLU: sharp edges, weakly class-specific."

    def input_attributions(self, loaded, batch, layer, targets, progress):
        return _input_gradients(loaded, batch, targets, guided=True)


class GuidedGradCAM(InputAttributionMethod):
    """Selvaraju et al. 2017: guided backprop × ReLU(Grad-CAM) of the chosen layer, sampled at each
    pixel's receptive-field centre (see geometry.py)."""

    name = "guided-gradcam"
    title = "Guided Grad-CAM"
    uses_layer = True
    cost = "two forward and two backward passes"
    summary = "Guided backprop's detail, restricted to where Grad-CAM says the class is."

    def input_attributions(self, loaded, batch, layer, targets, progress):
        gradcam = GradCAM()
        cam = gradcam.attribute(loaded, batch, layer, targets, None)[1].detach()
        size = (int(batch.shape[-2]), int(batch.shape[-1]))
        coarse = upsample(cam.clamp(min=0), size, gradcam.geometry(loaded, layer))
        guided = _input_gradients(loaded, batch, targets, guided=True)
        return guided * coarse[:, None]


class SmoothGrad(InputAttributionMethod):
    """Smilkov et al. 2017: the gradient averaged over noisy copies x + N(0, σ²) of the input.

    σ = ``noise_level`` × (max − min of the input). The noise comes from a generator seeded with ``seed``,
    so the same URL always gives the same map.
    """

    name = "smoothgrad"
    title = "SmoothGrad"
    cost = "one forward and backward pass per noisy sample (25, batched; classes share them)"
    heavy = True
    summary = "Vanilla gradient averaged over noisy copies of the image: less speckle."

    def __init__(self, samples: int = 25, noise_level: float = 0.15, seed: int = 0) -> None:
        self.samples = samples
        self.noise_level = noise_level
        self.seed = seed

    def sigma(self, batch: torch.Tensor) -> float:
        return self.noise_level * float(batch.max() - batch.min())

    def noise(self, batch: torch.Tensor) -> torch.Tensor:
        """The N×C×H×W noise tensor (drawn on the CPU, so it is the same on every device)."""
        generator = torch.Generator().manual_seed(self.seed)
        std = torch.full((self.samples, *batch.shape[1:]), self.sigma(batch))
        return torch.normal(0.0, std, generator=generator).to(batch.device, batch.dtype)

    def input_attributions(self, loaded, batch, layer, targets, progress):
        noisy = batch + self.noise(batch)
        return _sample_gradients(loaded, noisy, targets, progress).mean(dim=1)


class IntegratedGradients(InputAttributionMethod):
    """Sundararajan et al. 2017: (x − x') ⊙ ∫₀¹ ∂y^c/∂x at x' + α(x − x') dα, with a zero baseline x'
    (the dataset's mean colour after normalisation) and Gauss–Legendre quadrature of ``steps`` points."""

    name = "integrated-gradients"
    title = "Integrated gradients"
    cost = "one forward and backward pass per integration step (32, batched; classes share them)"
    heavy = True
    summary = "Gradients summed along the path from a blank image: attributions add up to the score change."

    def __init__(self, steps: int = 32) -> None:
        self.steps = steps

    def quadrature(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Gauss–Legendre nodes and weights moved from [−1, 1] to [0, 1]."""
        nodes, weights = np.polynomial.legendre.leggauss(self.steps)
        return torch.from_numpy(0.5 * (nodes + 1.0)), torch.from_numpy(0.5 * weights)

    def input_attributions(self, loaded, batch, layer, targets, progress):
        alphas, weights = self.quadrature()
        alphas = alphas.to(batch.device, batch.dtype)
        weights = weights.to(batch.device, batch.dtype)
        baseline = torch.zeros_like(batch)
        path = baseline + alphas[:, None, None, None] * (batch - baseline)
        grads = _sample_gradients(loaded, path, targets, progress)  # T×steps×C×H×W
        return (batch - baseline) * (weights[None, :, None, None, None] * grads).sum(dim=1)


class Occlusion(InputAttributionMethod):
    """Zeiler & Fergus 2014: slide a square of zeros (the mean colour) over the image; a pixel's
    attribution is the class score's drop, averaged over the windows that cover it.

    Window side = input side / 8 (at least 2), stride half a window; every target is read from the same
    occluded batch.
    """

    name = "occlusion"
    title = "Occlusion"
    cost = "one forward pass per window position (batched)"
    heavy = True
    shares_targets = True  # the occluded batches' scores serve every class
    summary = "How much the class score drops when a patch of the image is hidden."

    def window(self, height: int, width: int) -> tuple[int, int]:
        side = max(2, min(height, width) // 8)
        return side, max(1, side // 2)

    def input_attributions(self, loaded, batch, layer, targets, progress):
        _, channels, height, width = batch.shape
        side, stride = self.window(int(height), int(width))
        corners = [(y, x) for y in range(0, height - side + 1, stride) for x in range(0, width - side + 1, stride)]
        target_index = torch.tensor(targets, device=batch.device)
        total = torch.zeros((len(targets), height, width), dtype=batch.dtype, device=batch.device)
        counts = torch.zeros((height, width), dtype=batch.dtype, device=batch.device)
        with torch.inference_mode():
            base = loaded.module(batch)[0, target_index]
            for start, stop in batches(len(corners), SAMPLE_BATCH):
                chunk = corners[start:stop]
                occluded = batch.repeat(len(chunk), 1, 1, 1)
                for row, (y, x) in enumerate(chunk):
                    occluded[row, :, y : y + side, x : x + side] = 0
                drops = base[None] - loaded.module(occluded)[:, target_index]  # windows × T
                for row, (y, x) in enumerate(chunk):
                    total[:, y : y + side, x : x + side] += drops[row][:, None, None]
                    counts[y : y + side, x : x + side] += 1
                if progress is not None:
                    progress(stop, len(corners))
        per_pixel = total / counts.clamp(min=1)
        return per_pixel[:, None].expand(len(targets), channels, height, width).clone()
