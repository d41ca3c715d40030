"""The CAM family: each method is the shared pipeline (base.BaseCAM) plus its weighting step.

Notation: A^k is channel k of the target layer's output (h×w), G^k = ∂y^c/∂A^k the gradient of the class
score (the pre-softmax logit) with respect to it; the map is L = Σ_k w_k A^k (ReLU and scaling follow as
separate display steps).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from server.services.saliency.base import BaseCAM, CamContext, batches

EPS_PLUSPLUS = 1e-6
EPS_XGRAD = 1e-7
EPS_SCORE = 1e-8
SCORE_CAM_BATCH = 32


def _spatial_sum(t: torch.Tensor) -> torch.Tensor:
    return t.sum(dim=(-2, -1), keepdim=True)


class GradCAM(BaseCAM):
    """Selvaraju et al. 2017: w_k = mean over positions of G^k."""

    name = "gradcam"
    title = "Grad-CAM"
    summary = "α_k = mean over i,j of ∂y^c/∂A^k_ij; L = ReLU(Σ_k α_k A^k)."

    def channel_weights(self, ctx: CamContext) -> torch.Tensor:
        assert ctx.gradients is not None
        return ctx.gradients.mean(dim=(-2, -1), keepdim=True)


class GradCAMPlusPlus(BaseCAM):
    """Chattopadhyay et al. 2018: positive gradients weighted by α_ij = G² / (2G² + Σ_ab A · G³)."""

    name = "gradcampp"
    title = "Grad-CAM++"
    summary = "Weights positive gradients per position, so several instances of a class all show."

    def channel_weights(self, ctx: CamContext) -> torch.Tensor:
        g = ctx.gradients
        assert g is not None
        g2 = g * g
        g3 = g2 * g
        alpha = g2 / (2 * g2 + _spatial_sum(ctx.activation).unsqueeze(0) * g3 + EPS_PLUSPLUS)
        alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
        return _spatial_sum(alpha * g.clamp(min=0))


class XGradCAM(BaseCAM):
    """Fu et al. 2020: w_k = Σ_ij (A^k_ij / Σ_ab A^k_ab) G^k_ij (axiom-based gradient weighting)."""

    name = "xgradcam"
    title = "XGrad-CAM"
    summary = "Gradients weighted by each position's share of the channel's activation."

    def channel_weights(self, ctx: CamContext) -> torch.Tensor:
        assert ctx.gradients is not None
        a = ctx.activation.unsqueeze(0)
        return _spatial_sum(ctx.gradients * a / (_spatial_sum(a) + EPS_XGRAD))


class LayerCAM(BaseCAM):
    """Jiang et al. 2021: a weight per position, w_kij = ReLU(G^k_ij); works well at shallow layers too."""

    name = "layercam"
    title = "LayerCAM"
    summary = "Each position weighted by its own positive gradient: finer maps, also at early layers."

    def channel_weights(self, ctx: CamContext) -> torch.Tensor:
        assert ctx.gradients is not None
        return ctx.gradients.clamp(min=0)


class ScoreCAM(BaseCAM):
    """Wang et al. 2020, gradient-free: each channel, upsampled and scaled to [0, 1], masks the input;
    the class scores of the K masked images, softmaxed over channels, are the weights.

    All K masked images run in batches of ``SCORE_CAM_BATCH`` with no hooks (so without the model's lock),
    and one set of forward passes serves every target class at once. Progress is reported per batch.
    Masks use bilinear upsampling with corner alignment, as the reference implementation does.
    """

    name = "scorecam"
    title = "Score-CAM"
    uses_gradients = False
    cost = "one forward pass per channel of the layer (batched)"
    heavy = True
    summary = "Gradient-free: how much each channel's mask alone keeps the class score."

    def channel_weights(self, ctx: CamContext) -> torch.Tensor:
        size = tuple(ctx.batch.shape[-2:])
        channels = ctx.activation.shape[0]
        targets = torch.tensor(ctx.targets, device=ctx.activation.device)
        scores = torch.empty((channels, len(ctx.targets)), dtype=torch.float32, device=ctx.activation.device)
        with torch.inference_mode():
            for start, stop in batches(channels, SCORE_CAM_BATCH):
                # Masks are made per batch: all of them at once would be K×H×W (411 MB for ResNet-50).
                masks = F.interpolate(ctx.activation[None, start:stop], size=size, mode="bilinear", align_corners=True)[
                    0
                ]
                flat = masks.flatten(1)
                lo = flat.min(dim=1).values[:, None, None]
                hi = flat.max(dim=1).values[:, None, None]
                masks = (masks - lo) / (hi - lo + EPS_SCORE)
                scores[start:stop] = ctx.loaded.module(ctx.batch * masks[:, None]).float()[:, targets]
                if ctx.progress is not None:
                    ctx.progress(stop, channels)
        weights = torch.softmax(scores.t(), dim=1)  # T×K, softmax over channels
        return weights[:, :, None, None].to(ctx.activation.dtype)


class EigenCAM(BaseCAM):
    """Muhammad & Yeasin 2020: the activations' first principal component, no gradients and no class.

    The positions × channels matrix is centred over positions and projected on its first right singular
    vector. A singular vector's sign is arbitrary, so the map is flipped when its strongest value is
    negative, making the dominant structure positive. Every target class gets the same map.
    """

    name = "eigencam"
    title = "Eigen-CAM"
    uses_gradients = False
    cost = "one forward pass and an SVD"
    summary = "First principal component of the layer's activations: class-independent."

    def cam(self, ctx: CamContext) -> torch.Tensor:
        a = ctx.activation.double()
        k, h, w = a.shape
        positions = a.reshape(k, h * w).t()
        centred = positions - positions.mean(dim=0, keepdim=True)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        projection = (centred @ vh[0]).reshape(h, w)
        if projection.min().abs() > projection.max().abs():
            projection = -projection
        return projection.to(ctx.activation.dtype).unsqueeze(0).expand(len(ctx.targets), h, w).clone()
