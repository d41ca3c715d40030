"""Explicit display steps: ReLU, upsampling to the input, and safe scaling to [0, 1].

Methods produce signed raw maps; these functions turn them into what the page shows. Every division has
an epsilon, so a map that is zero everywhere (an untrained net, a dead class) scales to zeros, not NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from server.services.runtime.architecture_catalog import LayerGeometry

EPS = 1e-12


@dataclass(frozen=True)
class Scaled:
    """``values`` in [0, 1]; 0 stands for the raw value ``low`` and 1 for ``high``."""

    values: torch.Tensor
    low: float
    high: float


def upsample(maps: torch.Tensor, size: tuple[int, int], geometry: LayerGeometry | None = None) -> torch.Tensor:
    """T×h×w maps → T×H×W at the input's resolution, bilinearly.

    With ``geometry``, each input pixel takes the map's value at its own receptive-field coordinate
    (pixel y ↔ unit (y − start) / jump), edge units extending to the border; without it, the map is
    stretched over the image (half-pixel centres, as cv2.resize and PIL do).
    """
    if geometry is None:
        if tuple(maps.shape[-2:]) == tuple(size):
            return maps
        return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    h, w = maps.shape[-2:]
    units_y = (torch.arange(size[0], dtype=torch.float32) - geometry.start[0]) / geometry.jump[0]
    units_x = (torch.arange(size[1], dtype=torch.float32) - geometry.start[1]) / geometry.jump[1]
    # grid_sample with align_corners=True maps -1 and +1 to the centres of the first and last units
    gy = 2.0 * units_y / max(h - 1, 1) - 1.0
    gx = 2.0 * units_x / max(w - 1, 1) - 1.0
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1).to(maps.device, maps.dtype)
    grid = grid.unsqueeze(0).expand(maps.shape[0], *grid.shape)
    return F.grid_sample(maps[:, None], grid, mode="bilinear", padding_mode="border", align_corners=True)[:, 0]


def min_max(maps: torch.Tensor) -> list[Scaled]:
    """Each map (T×H×W) scaled so its minimum is 0 and its maximum 1 — vectorised over the T maps."""
    flat = maps.flatten(1)
    low, high = flat.amin(dim=1), flat.amax(dim=1)
    span = (high - low).clamp(min=EPS)
    values = ((maps - low[:, None, None]) / span[:, None, None]).clamp_(0, 1)
    return [Scaled(v, lo, hi) for v, lo, hi in zip(values, low.tolist(), high.tolist())]


def magnitude_percentile(maps: torch.Tensor, percentile: float = 99.5) -> list[Scaled]:
    """|map| divided by its ``percentile``-th value and clipped: a few extreme pixels (common in
    gradient maps) would otherwise leave everything else black."""
    mag = maps.abs().flatten(1)
    high = torch.quantile(mag.double(), percentile / 100.0, dim=1).to(maps.dtype)
    high = torch.where(high > EPS, high, mag.amax(dim=1))  # a map that is mostly zero: use its peak
    values = (mag / high.clamp(min=EPS)[:, None]).clamp_(0, 1).reshape(maps.shape)
    return [Scaled(v, 0.0, hi) for v, hi in zip(values, high.tolist())]
