"""Feature maps of one image: a layer's output as .npy, atlases and single channels as PNG, per-channel
statistics, and the overview strip of every layer. Every answer is a GET whose URL holds its full state."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Path, Query, Response

from server.deps import FeatureMapsDep, LayerDep, LoadedModelDep
from server.errors import ApiError
from server.responses import npy_response, png_response
from server.services.feature_maps.activations import channel_stats
from server.services.rendering import atlas
from server.services.rendering.colormaps import COLORMAPS

router = APIRouter(prefix="/api", tags=["activations"])

ScaleQuery = Annotated[
    Literal["channel", "layer", "global"],
    Query(description="colour scale per channel, per layer, or over all layers of the model for this image"),
]
ColormapQuery = Annotated[
    str, Query(description="auto (diverging for signed data, else viridis) or one of: " + ", ".join(COLORMAPS),
               json_schema_extra={"enum": ["auto", *COLORMAPS]})  # checked by _colormap from the same list
]
ColumnsQuery = Annotated[int | None, Query(ge=1, le=4096, description="atlas columns; default: a square grid")]
ChannelPath = Annotated[int, Path(ge=0, le=65535, description="channel index of the layer's output")]
LAYER = "/models/{model}/images/{image_id}/layers/{layer}"


def _colormap(name: str) -> str:
    if name != "auto" and name not in COLORMAPS:
        raise ApiError(422, "invalid_colormap", f"colormap must be auto or one of {', '.join(COLORMAPS)}.")
    return name


def _channel(output: np.ndarray, channel: int, layer: str) -> int:
    count = atlas.as_channels(output).shape[0]
    if not 0 <= channel < count:
        raise ApiError(404, "unknown_channel", f"Layer {layer!r} has channels 0 to {count - 1}; there is no {channel}.")
    return channel


@router.get(f"{LAYER}/activations.npy")
def layer_activations(image_id: str, layer: LayerDep, loaded: LoadedModelDep, maps: FeatureMapsDep) -> Response:
    """The layer's output for this image: float32 C×H×W (a vector of F for linear layers)."""
    return npy_response(maps.output(loaded, image_id, layer.name))


@router.get(f"{LAYER}/stats.json")
def layer_stats(image_id: str, layer: LayerDep, loaded: LoadedModelDep, maps: FeatureMapsDep) -> dict[str, Any]:
    """Per-channel mean, max, min and fraction > 0, for sorting channels."""
    output = maps.output(loaded, image_id, layer.name)
    stats = channel_stats(atlas.as_channels(output))
    return {"layer": layer.name, "shape": list(output.shape), "channels": len(stats["mean"]), **stats,
            "weights_used": loaded.variant}


@router.get(f"{LAYER}/atlas.json")
def layer_atlas_json(image_id: str, layer: LayerDep, loaded: LoadedModelDep, maps: FeatureMapsDep,
                     scale: ScaleQuery = "layer", colormap: ColormapQuery = "auto",
                     columns: ColumnsQuery = None) -> dict[str, Any]:
    """The atlas's grid geometry, colour map stops and each tile's value range (its legend)."""
    output = maps.output(loaded, image_id, layer.name)
    spec = maps.layout(loaded, image_id, output, scale, _colormap(colormap), columns)
    return {"layer": layer.name, "shape": list(output.shape), **spec.as_json(), "weights_used": loaded.variant}


@router.get(f"{LAYER}/atlas.png")
def layer_atlas_png(image_id: str, layer: LayerDep, loaded: LoadedModelDep, maps: FeatureMapsDep,
                    scale: ScaleQuery = "layer", colormap: ColormapQuery = "auto", columns: ColumnsQuery = None) -> Response:
    """Every channel of the layer in one grid picture; atlas.json with the same query describes it."""
    output = maps.output(loaded, image_id, layer.name)
    spec = maps.layout(loaded, image_id, output, scale, _colormap(colormap), columns)
    headers = {"X-ConvScope-Grid": f"{spec.columns}x{spec.rows}",
               "X-ConvScope-Tile": f"{spec.tile_width}x{spec.tile_height}"}
    return png_response(atlas.atlas_png(output, spec), headers)


@router.get(f"{LAYER}/channels/{{channel}}.png")
def channel_picture(image_id: str, layer: LayerDep, channel: ChannelPath, loaded: LoadedModelDep, maps: FeatureMapsDep,
                    scale: ScaleQuery = "channel", colormap: ColormapQuery = "auto") -> Response:
    """One channel at full resolution; its value range is in the X-ConvScope-Range header (low,high)."""
    output = maps.output(loaded, image_id, layer.name)
    channel = _channel(output, channel, layer.name)
    spec = maps.layout(loaded, image_id, output, scale, _colormap(colormap))
    headers = {"X-ConvScope-Colormap": spec.colormap,
               "X-ConvScope-Range": f"{float(spec.low[channel])!r},{float(spec.high[channel])!r}"}
    return png_response(atlas.channel_png(output, channel, spec), headers)


@router.get(f"{LAYER}/channels/{{channel}}.npy")
def channel_values(image_id: str, layer: LayerDep, channel: ChannelPath, loaded: LoadedModelDep,
                   maps: FeatureMapsDep) -> Response:
    """One channel's values, float32 H×W: the page reads the value under the cursor from it."""
    output = maps.output(loaded, image_id, layer.name)
    channel = _channel(output, channel, layer.name)
    return npy_response(atlas.as_channels(output)[channel])


@router.get("/models/{model}/images/{image_id}/overview.json")
def layers_overview(image_id: str, loaded: LoadedModelDep, maps: FeatureMapsDep) -> dict[str, Any]:
    """Every layer's value range and strongest channels; ``row`` is its row in overview.png."""
    overview = maps.overview(loaded, image_id)
    return {**overview.as_json(), "weights_used": loaded.variant}


@router.get("/models/{model}/images/{image_id}/overview.png")
def layers_overview_png(image_id: str, loaded: LoadedModelDep, maps: FeatureMapsDep) -> Response:
    """Thumbnails of every layer's strongest channels, one row per layer (see overview.json)."""
    return png_response(maps.overview(loaded, image_id).png)
