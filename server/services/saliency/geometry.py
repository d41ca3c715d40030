"""Where each unit of a layer sits on the input: the centre of its receptive field.

Unit i of a layer is centred on input pixel ``start + i·jump`` (per axis). Stretching a layer's map over
the image with a plain resize puts unit 0 at the image's corner instead; for a net with unpadded
convolutions (TinyVGG: block2.3's 26 units are centred on pixels 6.5 … 56.5 of 64) that shifts the map by
several pixels towards the edges. Maps are therefore sampled at each pixel's receptive-field coordinate.

The geometry depends only on the architecture, so it is traced once per model on a fresh untrained build
(never on the shared module, which other requests are running).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import torch

from models.registry import ModelEntry
from server.services.receptive_field import trace_fields


@dataclass(frozen=True)
class LayerGeometry:
    """Unit (i, j) of the layer is centred on input pixel (start[0] + i·jump[0], start[1] + j·jump[1])."""

    start: tuple[float, float]
    jump: tuple[float, float]


log = logging.getLogger("convscope")
_cache: dict[str, dict[str, LayerGeometry]] = {}
_lock = threading.Lock()


def model_geometry(entry: ModelEntry) -> dict[str, LayerGeometry]:
    """Geometry of every layer whose output has a receptive field smaller than the whole image."""
    with _lock:
        hit = _cache.get(entry.id)
    if hit is not None:
        return hit
    example = torch.zeros(1, entry.input.channels, entry.input.height, entry.input.width)
    try:
        fields = trace_fields(entry.build_untrained(), example)
    except Exception:  # an architecture the tracer cannot follow: fall back to stretched maps, say so once
        log.warning(
            "receptive fields of %s could not be traced; saliency maps will be stretched", entry.id, exc_info=True
        )
        fields = {}
    geometry = {
        name: LayerGeometry(tuple(field.start), tuple(field.jump))  # type: ignore[arg-type]
        for name, field in fields.items()
        if not field.whole_image
    }
    with _lock:
        _cache[entry.id] = geometry
    return geometry


def layer_geometry(entry: ModelEntry, layer: str) -> LayerGeometry | None:
    """The layer's geometry, or None when it has none (then maps are stretched over the image)."""
    return model_geometry(entry).get(layer)
