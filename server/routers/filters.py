"""Learned filters: a conv layer's kernels as a picture (with its geometry and scale) and a histogram of
any layer's weights. The raw tensors are weights.npy / bias.npy in routers/models.py."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Response
from torch import nn

from server.deps import LayerDep, LoadedModelDep
from server.errors import ApiError
from server.responses import png_response
from server.services.feature_maps.filters import FilterRequestError, kernel_atlas, kernel_page, weight_histogram
from server.services.runtime.model_runtime import LoadedModel, ModelLayer

router = APIRouter(prefix="/api", tags=["filters"])

MAX_CHANNEL_INDEX = 65535  # far above any layer's channel count; the bound keeps the schema honest
StartQuery = Annotated[int, Query(ge=0, le=MAX_CHANNEL_INDEX, description="first channel of the page")]
CountQuery = Annotated[int | None, Query(ge=1, le=256, description="channels on the page: at most 64 per axis (256 "
                                                            "kernels of an RGB-input layer), and no more than the "
                                                            "layer has from the start; a page beyond is 404")]


def _conv_weight(loaded: LoadedModel, layer: ModelLayer) -> np.ndarray:
    module = layer.module
    if not isinstance(module, nn.Conv2d):
        raise ApiError(404, "not_a_conv_layer", f"Layer {layer.name!r} of {loaded.entry.id} is a "
                                                f"{type(module).__name__}; kernel pictures are for Conv2d layers.")
    return module.weight.detach().float().cpu().numpy()


def _kernels(loaded: LoadedModel, layer: ModelLayer, out_start: int, out_count: int | None,
             in_start: int, in_count: int | None) -> tuple[bytes, dict[str, Any]]:
    weight = _conv_weight(loaded, layer)
    try:
        page = kernel_page(weight.shape, out_start, out_count, in_start, in_count)
    except FilterRequestError as exc:
        raise ApiError(404, "invalid_page", f"There is no such page of this layer: {exc}.") from None
    return kernel_atlas(weight, page)


@router.get("/models/{model}/layers/{layer}/filters.png")
def filters_png(layer: LayerDep, loaded: LoadedModelDep, out_start: StartQuery = 0, out_count: CountQuery = None,
                in_start: StartQuery = 0, in_count: CountQuery = None) -> Response:
    """A conv layer's kernels: colour images for an RGB first layer, else diverging per-input slices."""
    png, _ = _kernels(loaded, layer, out_start, out_count, in_start, in_count)
    return png_response(png)


@router.get("/models/{model}/layers/{layer}/filters.json")
def filters_json(layer: LayerDep, loaded: LoadedModelDep, out_start: StartQuery = 0,
                 out_count: CountQuery = None, in_start: StartQuery = 0, in_count: CountQuery = None) -> dict[str, Any]:
    """Geometry, page and scale of filters.png with the same query."""
    _, meta = _kernels(loaded, layer, out_start, out_count, in_start, in_count)
    return {"layer": layer.name, **meta, "weights_used": loaded.variant}


@router.get("/models/{model}/layers/{layer}/histogram.json")
def weights_histogram(layer: LayerDep, loaded: LoadedModelDep,
                      bins: Annotated[int, Query(ge=2, le=512)] = 50) -> dict[str, Any]:
    """Histogram (counts and edges) of the layer's weight tensor."""
    module = layer.module
    weight = getattr(module, "weight", None)
    if weight is None or not hasattr(weight, "detach"):
        raise ApiError(404, "no_weight",
                       f"Layer {layer.name!r} of {loaded.entry.id} ({type(module).__name__}) has no weights.")
    return {"layer": layer.name, **weight_histogram(weight.detach().float().cpu().numpy(), bins),
            "weights_used": loaded.variant}
