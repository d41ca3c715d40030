"""The network at a glance for one image: every layer as a column of its strongest channels.

One forward pass records, for each column, every channel's maximum and mean and small thumbnails of the
strongest channels (by maximum); the thumbnails of all columns are packed into one RGB PNG, each
column's tiles coloured on that column's own range. Vector layers (linear) keep their strongest units'
values instead. Which layers become columns comes from the architecture table: every leaf layer for
small models; for deep ones the blocks at the deepest nesting level that still fits ``max_columns``
(ResNet-18's residual blocks, EfficientNet's MBConv blocks), so the picture stays readable.

The dense-layer detail (the inputs that contribute most to one unit of a linear layer) is here too: it
captures the layer's input with a request-scoped forward hook and multiplies by the weight row.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from server.errors import ApiError
from server.services.feature_maps.activations import capture_layers
from server.services.rendering.atlas import as_channels, choose_colormap, normalise
from server.services.rendering.colormaps import apply_colormap, colormap_stops, is_diverging
from server.services.runtime.cache import ResultCache
from server.services.runtime.hooks import LayerRecorder, forward_hooks
from server.services.runtime.inputs import ModelInputs
from server.services.runtime.model_runtime import LoadedModel, ModelLayer
from server.services.work.scheduler import Admit

THUMB_MAX = 32  # a thumbnail's longer side, in map cells
SKIPPED_KINDS = ("reshape", "dropout", "identity")
# pass-through modules: their output is the previous column again (timm's BatchNormAct2d has an Identity
# "drop" between the norm and its activation)
SKIPPED_TYPES = ("Identity", "Dropout", "Dropout2d", "Flatten")


def _shown(layer: dict[str, Any]) -> bool:
    shape = layer.get("output_shape")
    return (bool(shape) and len(shape) in (1, 3) and layer.get("kind") not in SKIPPED_KINDS
            and layer.get("type") not in SKIPPED_TYPES)


def choose_columns(layers: Sequence[dict[str, Any]], max_columns: int, min_columns: int = 8) -> list[dict[str, Any]]:
    """The architecture table's rows that become columns, in forward order.

    Cutting the module tree at depth d gives the modules at depth d plus the leaves above it. The
    deepest cut with at most ``max_columns`` columns wins (every leaf for the small models, ResNet's
    residual blocks); a model whose top level says too little (VGG: ``features``, ``avgpool``,
    ``classifier``) gets its next deeper cut instead while that stays under twice the limit, and the
    page scrolls sideways.
    """
    depths = sorted({int(layer.get("depth", 1)) for layer in layers}) or [1]

    def cut(depth: int) -> list[dict[str, Any]]:
        return [layer for layer in layers if _shown(layer)
                and (int(layer.get("depth", 1)) == depth or (layer.get("leaf") and int(layer.get("depth", 1)) < depth))]

    cuts = [cut(depth) for depth in depths]
    fitting = [c for c in cuts if min_columns <= len(c) <= max_columns]
    if fitting:
        return max(reversed(fitting), key=len)  # ties: the deeper cut
    small = [c for c in cuts if len(c) <= max_columns]
    roomy = [c for c in cuts if max_columns < len(c) <= 2 * max_columns]
    if roomy and (not small or len(max(small, key=len)) < min_columns):
        return min(roomy, key=len)
    return max(reversed(small), key=len) if small else min(cuts, key=len)


def _thumbnail(channel_map: np.ndarray) -> np.ndarray:
    h, w = channel_map.shape
    if max(h, w) <= THUMB_MAX:
        return channel_map
    scale = THUMB_MAX / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    t = torch.from_numpy(np.ascontiguousarray(channel_map, dtype=np.float32))[None, None]
    return F.adaptive_avg_pool2d(t, size)[0, 0].numpy()  # averaging keeps thin structures visible


def summarise_column(array: np.ndarray, per_column: int, all_up_to: int) -> dict[str, Any]:
    """Ranges, every channel's max and mean, the order by max, and thumbnails of the strongest ones."""
    maps = as_channels(array)
    flat = maps.reshape(maps.shape[0], -1)
    maxima = flat.max(axis=1)
    means = flat.mean(axis=1)
    order = np.argsort(-maxima, kind="stable")
    count = maps.shape[0] if maps.shape[0] <= all_up_to else per_column
    top = order[:count]
    vector = array.ndim == 1
    return {
        "min": float(flat.min()), "max": float(flat.max()), "vector": vector,
        "order": order.astype(np.int64), "maxima": maxima.astype(np.float32), "means": means.astype(np.float32),
        "top": top, "thumbs": None if vector else [_thumbnail(maps[int(c)]) for c in top],
    }


class NetworkOverview:
    """The columns' JSON and the PNG of their thumbnails."""

    def __init__(self, columns: list[dict[str, Any]], png: bytes, size: tuple[int, int]) -> None:
        self.columns = columns
        self.png = png
        self.size = size

    @property
    def nbytes(self) -> int:
        return len(self.png) + 64 * sum(len(c["order"]) for c in self.columns)

    def as_json(self) -> dict[str, Any]:
        return {"columns": self.columns, "png": {"width": self.size[0], "height": self.size[1]},
                "thumb_max": THUMB_MAX}


def build_network(loaded: LoadedModel, batch: torch.Tensor, columns: Sequence[dict[str, Any]],
                  per_column: int, all_up_to: int) -> NetworkOverview:
    names = {layer["name"] for layer in columns}
    reduce = lambda name, arr: summarise_column(arr, per_column, all_up_to) if name in names else None  # noqa: E731
    captured = capture_layers(loaded, batch, keep=(), reduce=reduce)
    summaries = [(layer, captured.reduced.get(layer["name"])) for layer in columns]
    summaries = [(layer, s) for layer, s in summaries if s is not None]
    # pack: one strip per spatial column, tiles side by side, strips stacked
    strips = [(layer, s) for layer, s in summaries if not s["vector"]]
    width = max([sum(t.shape[1] + 1 for t in s["thumbs"]) for _, s in strips] or [1])
    height = max(1, sum(max(t.shape[0] for t in s["thumbs"]) + 1 for _, s in strips))
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    out: list[dict[str, Any]] = []
    y = 0
    for layer, s in summaries:
        cmap = choose_colormap("auto", s["min"])
        lo, hi = s["min"], s["max"]
        if is_diverging(cmap):
            lo, hi = -max(abs(lo), abs(hi)), max(abs(lo), abs(hi))
        flat_value = 0.5 if is_diverging(cmap) else 0.0
        shown = []
        if s["vector"]:
            for c in s["top"]:
                shown.append({"channel": int(c), "value": float(s["maxima"][c])})
        else:
            x = 0
            strip_h = max(t.shape[0] for t in s["thumbs"])
            for c, thumb in zip(s["top"], s["thumbs"], strict=True):
                th, tw = thumb.shape
                unit = normalise(thumb.astype(np.float32), np.float32(lo), np.float32(hi), flat_value)
                canvas[y:y + th, x:x + tw] = apply_colormap(np.clip(unit, 0, 1), cmap)
                shown.append({"channel": int(c), "max": float(s["maxima"][c]), "mean": float(s["means"][c]),
                              "tile": [x, y, tw, th]})
                x += tw + 1
            y += strip_h + 1
        shape = layer["output_shape"]
        out.append({
            "name": layer["name"], "type": layer.get("type"), "kind": layer.get("kind"),
            "leaf": bool(layer.get("leaf")), "shape": shape, "channels": int(shape[0]),
            "colormap": cmap, "range": [float(lo), float(hi)], "data_range": [s["min"], s["max"]],
            "stops": colormap_stops(cmap, 11), "vector": s["vector"], "shown": shown,
            "more": int(shape[0]) - len(shown), "order": [int(i) for i in s["order"]],
        })
    buf = io.BytesIO()
    Image.fromarray(canvas).save(buf, format="PNG", compress_level=1)
    return NetworkOverview(out, buf.getvalue(), (width, height))


class NetworkOverviews:
    """The network overview and dense-unit answers for stored images: inputs, admission, and the overviews
    in a byte-budgeted single-flight :class:`ResultCache` per (model, variant, image)."""

    def __init__(self, inputs: ModelInputs, admit: Admit, *, max_columns: int,
                 per_column: int, all_up_to: int, budget_bytes: int) -> None:
        self.inputs = inputs
        self.admit = admit
        self.max_columns = max_columns
        self.per_column = per_column
        self.all_up_to = all_up_to
        self.cache: ResultCache[NetworkOverview] = ResultCache("network overviews", budget_bytes)

    def overview(self, loaded: LoadedModel, image_id: str, layers: Sequence[dict[str, Any]]) -> NetworkOverview:
        """The overview of ``image_id`` (404 for an unknown image before any work)."""
        key = (loaded.entry.id, loaded.variant, image_id)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        batch = self.inputs.batch(loaded, image_id)
        columns = choose_columns(layers, self.max_columns)

        def build() -> NetworkOverview:
            with self.admit("network", "cheap"):
                return build_network(loaded, batch, columns, self.per_column, self.all_up_to)

        return self.cache.get_or_compute(key, build)

    def dense(self, loaded: LoadedModel, image_id: str, layer: ModelLayer, unit: int, top: int) -> dict[str, Any]:
        """:func:`dense_contributions` for a stored image (``layer`` resolved by ``server.deps.LayerDep``),
        admitted like every model computation."""
        batch = self.inputs.batch(loaded, image_id)
        with self.admit("network", "cheap"):
            return dense_contributions(loaded, batch, layer, unit, top)


# --- one unit of a linear layer: which inputs make it ---------------------------------------------------

def dense_contributions(loaded: LoadedModel, batch: torch.Tensor, layer: ModelLayer, unit: int,
                        top: int) -> dict[str, Any]:
    """Unit ``unit`` of linear layer ``layer``: output = bias + Σ_i w_i·x_i, its largest terms first."""
    layer_name, module = layer.name, layer.module
    if not isinstance(module, nn.Linear):
        # no dense view exists for other layers (a 404 like an unknown unit, not a malformed request)
        raise ApiError(404, "not_linear", f"Layer {layer_name!r} is a {type(module).__name__}, not a linear layer.")
    if not 0 <= unit < module.out_features:
        raise ApiError(404, "unknown_unit",
                       f"Layer {layer_name!r} has units 0 to {module.out_features - 1}; there is no {unit}.")
    seen = LayerRecorder()
    with forward_hooks(loaded, [(module, seen.hook(layer_name, keep="copy", with_input=True))]), torch.no_grad():
        loaded.module(batch)
    if layer_name not in seen.inputs:
        raise ApiError(422, "not_run", f"Layer {layer_name!r} did not run in the forward pass.")
    x, y = seen.inputs[layer_name].reshape(-1), seen.outputs[layer_name].reshape(-1)
    w = module.weight.detach()[unit].to("cpu", torch.float32)
    bias = float(module.bias.detach()[unit]) if module.bias is not None else 0.0
    products = w * x
    order = torch.argsort(products.abs(), descending=True, stable=True)
    top = max(1, min(top, products.numel()))
    picked = order[:top]
    rest = order[top:]
    return {
        "layer": layer_name, "unit": unit, "in_features": int(module.in_features),
        "out_features": int(module.out_features), "bias": bias, "output": float(y[unit]),
        "sum_of_products": float(products.sum()),
        "contributions": [{"index": int(i), "input": float(x[i]), "weight": float(w[i]),
                           "product": float(products[i])} for i in picked],
        "rest": {"count": int(rest.numel()), "sum": float(products[rest].sum()) if rest.numel() else 0.0,
                 "positive": float(products[rest].clamp(min=0).sum()) if rest.numel() else 0.0,
                 "negative": float(products[rest].clamp(max=0).sum()) if rest.numel() else 0.0},
        "positive_total": float(products.clamp(min=0).sum()), "negative_total": float(products.clamp(max=0).sum()),
    }
