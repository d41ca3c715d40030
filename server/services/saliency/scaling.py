"""Explicit display steps: ReLU, upsampling to the input, and safe scaling to [0, 1].

Methods produce signed raw maps; these functions turn them into what the page shows. Every division has
an epsilon, so a map that is zero everywhere (an untrained net, a dead class) scales to zeros, not NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

EPS = 1e-12


@dataclass(frozen=True)
class Scaled:
    """``values`` in [0, 1]; 0 stands for the raw value ``low`` and 1 for ``high``."""

    values: torch.Tensor
    low: float
    high: float


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (half-pixel centres, as cv2.resize and PIL do) T×h×w → T×H×W."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def min_max(maps: torch.Tensor) -> list[Scaled]:
    """Each map scaled so its minimum is 0 and its maximum 1."""
    out = []
    for m in maps:
        low, high = float(m.min()), float(m.max())
        out.append(Scaled(((m - low) / max(high - low, EPS)).clamp(0, 1), low, high))
    return out


def magnitude_percentile(maps: torch.Tensor, percentile: float = 99.5) -> list[Scaled]:
    """|map| divided by its ``percentile``-th value and clipped: a few extreme pixels (common in
    gradient maps) would otherwise leave everything else black."""
    out = []
    for m in maps:
        mag = m.abs()
        high = float(torch.quantile(mag.flatten().double(), percentile / 100.0)) if mag.numel() else 0.0
        if high <= EPS:
            high = float(mag.max())
        out.append(Scaled((mag / max(high, EPS)).clamp(0, 1), 0.0, high))
    return out
