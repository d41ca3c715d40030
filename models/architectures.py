"""The bundled teaching architectures.

Each is a plain ``nn.Module`` whose ``named_modules()`` give the layer names the API and the page use,
so every layer a user can pick (conv, activation, pool, linear) is its own module.
"""

from __future__ import annotations

import torch
from torch import nn


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al., 1998) adapted to 28×28 MNIST input.

    The original expects 32×32 input; padding the first convolution by 2 gives the same 28×28 C1
    maps. Subsampling layers are average pools and the activations tanh, as in the paper; the
    partial S2→C3 connection table is replaced by full connections, as most modern re-creations do.
    """

    def __init__(self, num_classes: int = 10, dropout: float = 0.0, batch_norm: bool = False) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5, padding=2),  # C1: 6×28×28
            *_norm(6, batch_norm),
            nn.Tanh(),
            nn.AvgPool2d(kernel_size=2, stride=2),  # S2: 6×14×14
            nn.Conv2d(6, 16, kernel_size=5),  # C3: 16×10×10
            *_norm(16, batch_norm),
            nn.Tanh(),
            nn.AvgPool2d(kernel_size=2, stride=2),  # S4: 16×5×5
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),  # C5
            nn.Tanh(),
            nn.Linear(120, 84),  # F6
            nn.Tanh(),
            *_dropout(dropout),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _norm(channels: int, on: bool) -> list[nn.Module]:
    """Batch normalisation after a convolution when asked for (training runs); nothing otherwise, so the
    bundled models keep their layer names."""
    return [nn.BatchNorm2d(channels)] if on else []


def _dropout(p: float) -> list[nn.Module]:
    return [nn.Dropout(p)] if p > 0 else []


def keras_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) zero padding Keras' 'same' applies along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2



class MnistShallow(nn.Module):
    """The course's shallow Keras CNN: Conv2D(10, 5×5, stride 2, same) → ReLU → Dense 50 → Dense 10."""

    def __init__(self, num_classes: int = 10, dropout: float = 0.0, batch_norm: bool = False) -> None:
        super().__init__()
        self.pad1 = nn.ZeroPad2d(_pad4(28, 5, 2))
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5, stride=2)  # 10×14×14
        self.bn1 = nn.BatchNorm2d(10) if batch_norm else None
        self.relu1 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(10 * 14 * 14, 50)
        self.relu2 = nn.ReLU()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.fc2 = nn.Linear(50, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(_maybe(self.bn1, self.conv1(self.pad1(x))))
        return self.fc2(_maybe(self.dropout, self.relu2(self.fc1(self.flatten(x)))))


class MnistDeep(nn.Module):
    """The course's deeper Keras CNN: three 'same' convolutions (10, 40, 80 filters) → Dense 50 → 10."""

    def __init__(self, num_classes: int = 10, dropout: float = 0.0, batch_norm: bool = False) -> None:
        super().__init__()
        self.pad1 = nn.ZeroPad2d(_pad4(28, 5, 2))
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5, stride=2)  # 10×14×14
        self.bn1 = nn.BatchNorm2d(10) if batch_norm else None
        self.relu1 = nn.ReLU()
        self.pad2 = nn.ZeroPad2d(_pad4(14, 5, 2))
        self.conv2 = nn.Conv2d(10, 40, kernel_size=5, stride=2)  # 40×7×7
        self.bn2 = nn.BatchNorm2d(40) if batch_norm else None
        self.relu2 = nn.ReLU()
        self.pad3 = nn.ZeroPad2d(_pad4(7, 5, 1))
        self.conv3 = nn.Conv2d(40, 80, kernel_size=5, stride=1)  # 80×7×7
        self.bn3 = nn.BatchNorm2d(80) if batch_norm else None
        self.relu3 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(80 * 7 * 7, 50)
        self.relu4 = nn.ReLU()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.fc2 = nn.Linear(50, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(_maybe(self.bn1, self.conv1(self.pad1(x))))
        x = self.relu2(_maybe(self.bn2, self.conv2(self.pad2(x))))
        x = self.relu3(_maybe(self.bn3, self.conv3(self.pad3(x))))
        return self.fc2(_maybe(self.dropout, self.relu4(self.fc1(self.flatten(x)))))


def _maybe(layer: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    return x if layer is None else layer(x)


def _pad4(size: int, kernel: int, stride: int) -> tuple[int, int, int, int]:
    before, after = keras_same_padding(size, kernel, stride)
    return (before, after, before, after)


class TinyVGG(nn.Module):
    """TinyVGG, the CNN Explainer architecture: two blocks of (conv3×3 → ReLU) ×2 → max-pool 2."""

    def __init__(self, num_classes: int, channels: int = 10, in_channels: int = 3, size: int = 64,
                 dropout: float = 0.0, batch_norm: bool = False) -> None:
        super().__init__()
        c, bn = channels, batch_norm
        self.block1 = nn.Sequential(
            nn.Conv2d(in_channels, c, kernel_size=3, padding=0), *_norm(c, bn), nn.ReLU(),
            nn.Conv2d(c, c, kernel_size=3, padding=0), *_norm(c, bn), nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        self.block2 = nn.Sequential(
            nn.Conv2d(c, c, kernel_size=3, padding=0), *_norm(c, bn), nn.ReLU(),
            nn.Conv2d(c, c, kernel_size=3, padding=0), *_norm(c, bn), nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        side = ((size - 4) // 2 - 4) // 2  # 64 → 60 → 30 → 26 → 13
        self.classifier = nn.Sequential(nn.Flatten(), *_dropout(dropout), nn.Linear(c * side * side, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.block2(self.block1(x)))
