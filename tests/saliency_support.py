"""Small frozen models for saliency tests (a TinyVGG and a small ResNet with hand-derived geometry), a
reference copy of a model, aligned upsampling and a hook counter: shared by the saliency test files."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch
from torch import nn

from models.architectures import TinyVGG
from models.registry import InputSpec, get_entry
from server.services.runtime.hooks import PERMANENT_HOOKS
from server.services.runtime.model_runtime import LoadedModel


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)  # the same ReLU module runs twice, as in torchvision's BasicBlock


class SmallResNet(nn.Module):
    def __init__(self, num_classes: int = 6) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.layer1 = _Residual(8)
        self.down = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(inplace=True))
        self.layer2 = _Residual(16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.down(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def _randomise_batch_norm(module: nn.Module, generator: torch.Generator) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=generator) * 0.1)


def as_loaded(module: nn.Module, target_layer: str, num_classes: int, size: int, model_id: str) -> LoadedModel:
    """``module`` frozen and in eval mode, as ModelRuntime hands models to services."""
    template = copy.deepcopy(module)  # the architecture, for tracing receptive fields
    entry = dataclasses.replace(
        get_entry("tinyvgg-shapes"),
        id=model_id,
        builder=lambda: copy.deepcopy(template),
        categories=tuple(f"class {i}" for i in range(num_classes)),
        input=InputSpec(3, size, size),
        target_layer=target_layer,
    )
    for p in module.parameters():
        p.requires_grad_(False)
    return LoadedModel(entry, "untrained", module.eval(), torch.device("cpu"), lambda image: torch.zeros(3, size, size))


def small_models() -> dict[str, tuple[LoadedModel, torch.Tensor]]:
    """name → (loaded model, a 1×3×H×W input), all seeded."""
    generator = torch.Generator().manual_seed(1234)
    torch.manual_seed(7)
    tiny = TinyVGG(num_classes=10)
    torch.manual_seed(8)
    res = SmallResNet(num_classes=6)
    _randomise_batch_norm(res, generator)
    return {
        "tinyvgg": (
            as_loaded(tiny, "block2.3", 10, 64, "test-tinyvgg"),
            torch.randn(1, 3, 64, 64, generator=generator),
        ),
        "small-resnet": (
            as_loaded(res, "layer2", 6, 32, "test-small-resnet"),
            torch.randn(1, 3, 32, 32, generator=generator),
        ),
    }


def reference_copy(loaded: LoadedModel) -> nn.Module:
    """A private copy with trainable parameters, for reference libraries that backpropagate to weights."""
    module = copy.deepcopy(loaded.module)
    for p in module.parameters():
        p.requires_grad_(True)
    return module.eval()


# Receptive-field centres worked out by hand: unit i of the layer is centred on input pixel start + i·jump.
# TinyVGG block2.3: two unpadded 3×3 convs (+2), a 2× pool (+0.5, ×2), two more unpadded convs (+1 each, ×2).
# SmallResNet layer2: 'same' padding everywhere, one stride-2 conv: centres at 0, 2, 4, …
HAND_GEOMETRY = {"tinyvgg": (6.5, 2.0), "small-resnet": (0.0, 2.0)}


def aligned_upsample(raw: np.ndarray, size: int, start: float, jump: float) -> np.ndarray:
    """Bilinear sampling of a h×w map at each pixel's receptive-field coordinate (y − start) / jump,
    edges extended — written with np.interp, independently of the server's grid_sample version."""
    units = np.arange(raw.shape[0], dtype=np.float64)
    coords = (np.arange(size, dtype=np.float64) - start) / jump
    rows = np.stack([np.interp(coords, units, raw[:, j]) for j in range(raw.shape[1])], axis=1)
    return np.stack([np.interp(coords, units, rows[i]) for i in range(size)], axis=0)


def hooks_left(module: nn.Module) -> int:
    """Hooks still registered on any submodule (forward, pre-forward, backward), but the permanent ones a loaded
    model is built with (its max-pools')."""
    total = 0
    for m in module.modules():
        forward = [*m._forward_hooks.values(), *m._forward_pre_hooks.values()]
        total += sum(hook not in PERMANENT_HOOKS for hook in forward) + len(m._backward_hooks)
        total += len(getattr(m, "_backward_pre_hooks", {}))
    return total
