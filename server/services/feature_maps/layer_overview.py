"""The whole model at a glance for one image: every layer's range and strongest channels as thumbnails.

One forward pass with a reducer (no layer's full output is kept), rendered once into a thumbnail strip
and kept in a small LRU per (model, variant, image). The range over all layers is the "global" scale of
the feature-map atlases.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch

from server.services.feature_maps.activations import capture_layers
from server.services.rendering.atlas import THUMB_SIZE, THUMBS_PER_LAYER, strip_png, strip_rows, summarise_layer
from server.services.runtime.cache import ResultCache
from server.services.runtime.model_runtime import LoadedModel


class LayerOverview:
    """Summaries of every layer; the thumbnail strip is drawn on first use (it is not needed to open a
    layer, so the forward pass that also made these summaries does not wait for it)."""

    def __init__(self, summaries: list[dict[str, Any]], layers: list[dict[str, Any]],
                 rows: list[dict[str, Any]], global_range: tuple[float, float]) -> None:
        self.layers = layers  # per selectable layer: name, min, max, strip row (or null), channels
        self.global_range = global_range
        self._summaries: list[dict[str, Any]] | None = summaries
        self._rows = rows
        self._png: bytes | None = None
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Bytes held: the thumbnails until the strip is drawn, then the PNG."""
        with self._lock:
            if self._png is not None:
                return len(self._png)
            return sum(int(s["thumbs"].nbytes) for s in self._summaries or () if s.get("thumbs") is not None)

    @property
    def png(self) -> bytes:
        with self._lock:
            if self._png is None:
                assert self._summaries is not None
                self._png = strip_png(self._summaries, self._rows)
                self._summaries = None  # the thumbnails now live in the PNG only
            return self._png

    def as_json(self) -> dict[str, Any]:
        return {
            "thumb_size": THUMB_SIZE,
            "thumbs_per_layer": THUMBS_PER_LAYER,
            "global_range": list(self.global_range),
            "layers": self.layers,
        }


def build_overview(loaded: LoadedModel, batch: torch.Tensor, layer_names: Sequence[str]) -> LayerOverview:
    """Summaries of ``layer_names`` (in that order) from one forward pass."""
    captured = capture_layers(loaded, batch, keep=(), reduce=summarise_layer)
    return overview_from_summaries(captured.reduced, layer_names)


def overview_from_summaries(reduced: dict[str, Any], layer_names: Sequence[str]) -> LayerOverview:
    """The overview from :func:`summarise_layer` results keyed by layer name."""
    summaries = [{"name": name, **reduced[name]} for name in layer_names if name in reduced]
    rows = strip_rows(summaries)
    row_of = {row["name"]: row for row in rows}
    layers = []
    for summary in summaries:
        row = row_of.get(summary["name"])
        layers.append({
            "name": summary["name"],
            "min": summary["min"],
            "max": summary["max"],
            "top_channels": summary["top_channels"],
            "row": row["row"] if row else None,
            "colormap": row["colormap"] if row else None,
            "range": row["range"] if row else None,
        })
    lows = [s["min"] for s in summaries] or [0.0]
    highs = [s["max"] for s in summaries] or [0.0]
    return LayerOverview(summaries, layers, rows, (float(min(lows)), float(max(highs))))


class LayerOverviews:
    """Recent overviews in a :class:`ResultCache`; concurrent requests for one image share one forward pass."""

    def __init__(self, budget_bytes: int = 64 * 1024 * 1024) -> None:
        self.cache: ResultCache[LayerOverview] = ResultCache("overviews", budget_bytes)

    @staticmethod
    def _key(loaded: LoadedModel, image_id: str) -> tuple[str, str, str]:
        return (loaded.entry.id, loaded.variant, image_id)

    def adopt(self, loaded: LoadedModel, image_id: str, layer_names: Sequence[str], reduced: dict[str, Any]) -> None:
        """Keep an overview made from summaries that another forward pass computed anyway."""
        key = self._key(loaded, image_id)
        if key not in self.cache:
            self.cache.put(key, overview_from_summaries(reduced, layer_names))

    def has(self, loaded: LoadedModel, image_id: str) -> bool:
        return self._key(loaded, image_id) in self.cache

    def get(
        self,
        loaded: LoadedModel,
        image_id: str,
        layer_names: Sequence[str],
        batch_fn: Callable[[], torch.Tensor],
        admit: Callable[[], Any] | None = None,
    ) -> LayerOverview:
        def compute() -> LayerOverview:
            batch = batch_fn()
            with admit() if admit is not None else nullcontext():
                return build_overview(loaded, batch, layer_names)

        return self.cache.get_or_compute(self._key(loaded, image_id), compute)
