"""Is a CAM's peak an artefact of the map's border? The check the page's warning rests on.

The *outer ring* is the outermost cell of the map's own grid (the target layer's h×w) on each side:
2h + 2w − 4 of the h·w cells. Zero padding makes deep layers light up along it; on real photos the peak of a
too-early layer sits on the border or a corner (issue 20). The map is flagged when both hold:

- the ring holds more than ``RING_FACTOR`` times its share of the area in positive mass
  (Σ ReLU(raw) over the ring / Σ ReLU(raw) > RING_FACTOR · ring cells / all cells), and
- the map's peak (the maximum of the raw map, which is where the display map peaks) is in the ring.

Maps of 2 cells or fewer on a side are all ring and are never flagged. Gradient methods' maps are at input
resolution, where a one-pixel ring means nothing: they get no check (``None``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from server.services.runtime.model_runtime import LoadedModel
from server.services.saliency.layer_choice import default_layer

RING_FACTOR = 1.5


def ring_mask(height: int, width: int) -> np.ndarray:
    """True on the outermost cell of each side of a height×width grid."""
    mask = np.ones((height, width), dtype=bool)
    mask[1:-1, 1:-1] = False
    return mask


def border_check(raw: np.ndarray, layer: str, deeper_layer: str | None) -> dict[str, Any]:
    """The check for one class's signed h×w ``raw`` map at ``layer``. ``deeper_layer`` is offered only with a
    warning (``None`` otherwise)."""
    height, width = raw.shape
    ring = ring_mask(height, width)
    positive = np.clip(raw.astype(np.float64), 0.0, None)
    total = float(positive.sum())
    ring_share = float(positive[ring].sum()) / total if total > 0 else 0.0
    area_share = float(ring.sum()) / ring.size
    peak = np.unravel_index(int(np.argmax(raw)), raw.shape)
    peak_in_ring = bool(total > 0 and ring[peak])
    warning = bool(peak_in_ring and ring_share > RING_FACTOR * area_share)
    return {
        "layer": layer,
        "grid": [height, width],
        "ring_share": ring_share,
        "area_share": area_share,
        "peak_in_ring": peak_in_ring,
        "warning": warning,
        "deeper_layer": deeper_layer if warning else None,
    }


def deeper_layer(layer_order: list[str], layer: str, default: str) -> str | None:
    """The layer to offer instead of ``layer``: the model's default saliency layer when ``layer`` runs before
    it (``layer_order``: the model's layers in order), else none (``layer`` is the default or past it)."""
    if layer == default or layer not in layer_order or default not in layer_order:
        return None
    inside_default = layer.startswith(default + ".")  # a module of the default block runs before it ends
    return default if inside_default or layer_order.index(layer) < layer_order.index(default) else None


def describe_border(loaded: LoadedModel, layer: str | None, raw: np.ndarray) -> dict[str, Any] | None:
    """The border check of a map at ``layer`` for the saliency answers; None for maps with no layer grid."""
    if layer is None or raw.ndim != 2:
        return None
    order = [name for name, _ in loaded.module.named_modules() if name]
    return border_check(raw, layer, deeper_layer(order, layer, default_layer(loaded.entry)))
