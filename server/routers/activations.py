"""Feature maps of one image: a layer's output as .npy, atlases and single channels as PNG, per-channel
statistics, and the overview strip of every layer. Every answer is a GET whose URL holds its full state."""

from __future__ import annotations

import threading
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response

from server.deps import ArchitecturesDep, ImageStoreDep, LimiterDep, RuntimeDep, WeightsQuery, weights_header
from server.errors import ApiError
from server.responses import npy_response, png_response
from server.services import atlas
from server.services.activations import ActivationStore, channel_stats, selectable_layers
from server.services.colormaps import COLORMAPS
from server.services.image_store import ImageStore
from server.services.layer_overview import LayerOverview, LayerOverviews
from server.services.model_inputs import input_batch
from server.services.model_runtime import LoadedModel, ModelRuntime
from server.services.work_limiter import WorkLimiter

router = APIRouter(prefix="/api", tags=["activations"])

_STATE_LOCK = threading.Lock()
DEFAULT_ACTIVATION_BUDGET = 256 * 1024 * 1024


def get_activation_store(request: Request) -> ActivationStore:
    """The app's activation cache, made on first use (its budget comes from the settings)."""
    state = request.app.state
    with _STATE_LOCK:
        store = getattr(state, "activations", None)
        if store is None:
            budget = getattr(state.settings, "activation_cache_bytes", DEFAULT_ACTIVATION_BUDGET)
            store = state.activations = ActivationStore(budget)
        return store


def get_layer_overviews(request: Request) -> LayerOverviews:
    state = request.app.state
    with _STATE_LOCK:
        overviews = getattr(state, "layer_overviews", None)
        if overviews is None:
            overviews = state.layer_overviews = LayerOverviews()
        return overviews


ActivationStoreDep = Annotated[ActivationStore, Depends(get_activation_store)]
LayerOverviewsDep = Annotated[LayerOverviews, Depends(get_layer_overviews)]
ScaleQuery = Annotated[
    Literal["channel", "layer", "global"],
    Query(description="colour scale per channel, per layer, or over all layers of the model for this image"),
]
ColormapQuery = Annotated[
    str, Query(description="auto (diverging for signed data, else viridis) or one of: " + ", ".join(COLORMAPS))
]
ColumnsQuery = Annotated[int | None, Query(ge=1, le=4096, description="atlas columns; default: a square grid")]


def _colormap(name: str) -> str:
    if name != "auto" and name not in COLORMAPS:
        raise ApiError(422, "invalid_colormap", f"colormap must be auto or one of {', '.join(COLORMAPS)}.")
    return name


def _layers(loaded: LoadedModel, architectures: ArchitecturesDep) -> list[dict[str, Any]]:
    return selectable_layers(architectures.get(loaded.entry)["layers"])


def _output(loaded: LoadedModel, image_id: str, layer: str, store: ImageStore, activations: ActivationStore,
            architectures: ArchitecturesDep, limiter: WorkLimiter, overviews: LayerOverviews) -> np.ndarray:
    layers = _layers(loaded, architectures)
    names = [entry["name"] for entry in layers]
    # the first forward pass for an image also summarises every layer for the strip: no second pass later
    summarise = None if overviews.has(loaded, image_id) else atlas.summarise_layer
    return activations.get(loaded, image_id, layer, layers, lambda: input_batch(loaded, store, image_id),
                           limiter.admit, summarise, lambda reduced: overviews.adopt(loaded, image_id, names, reduced))


def _overview(loaded: LoadedModel, image_id: str, store: ImageStore, overviews: LayerOverviews,
              architectures: ArchitecturesDep, limiter: WorkLimiter) -> LayerOverview:
    names = [layer["name"] for layer in _layers(loaded, architectures)]
    return overviews.get(loaded, image_id, names, lambda: input_batch(loaded, store, image_id), limiter.admit)


def _layout(loaded: LoadedModel, image_id: str, output: np.ndarray, scale: str, colormap: str, columns: int | None,
            store: ImageStore, overviews: LayerOverviews, architectures: ArchitecturesDep,
            limiter: WorkLimiter) -> atlas.AtlasLayout:
    global_range = None
    if scale == "global":
        global_range = _overview(loaded, image_id, store, overviews, architectures, limiter).global_range
    return atlas.layout(output, scale, _colormap(colormap), columns, global_range)


def _channel(output: np.ndarray, channel: int, layer: str) -> int:
    count = atlas.as_channels(output).shape[0]
    if not 0 <= channel < count:
        raise ApiError(404, "unknown_channel", f"Layer {layer!r} has channels 0 to {count - 1}; there is no {channel}.")
    return channel


def _loaded(runtime: ModelRuntime, model: str, weights: str) -> LoadedModel:
    return runtime.load(model, weights)


@router.get("/models/{model}/images/{image_id}/layers/{layer}/activations.npy")
def layer_activations(model: str, image_id: str, layer: str, runtime: RuntimeDep, store: ImageStoreDep,
                      activations: ActivationStoreDep, overviews: LayerOverviewsDep, architectures: ArchitecturesDep,
                      limiter: LimiterDep,
                      weights: WeightsQuery = "auto") -> Response:
    """The layer's output for this image: float32 C×H×W (a vector of F for linear layers)."""
    loaded = _loaded(runtime, model, weights)
    output = _output(loaded, image_id, layer, store, activations, architectures, limiter, overviews)
    return npy_response(output, weights_header(loaded.variant))


@router.get("/models/{model}/images/{image_id}/layers/{layer}/stats.json")
def layer_stats(model: str, image_id: str, layer: str, runtime: RuntimeDep, store: ImageStoreDep,
                activations: ActivationStoreDep, overviews: LayerOverviewsDep, architectures: ArchitecturesDep,
                limiter: LimiterDep,
                response: Response, weights: WeightsQuery = "auto") -> dict[str, Any]:
    """Per-channel mean, max, min and fraction > 0, for sorting channels."""
    loaded = _loaded(runtime, model, weights)
    output = _output(loaded, image_id, layer, store, activations, architectures, limiter, overviews)
    response.headers.update(weights_header(loaded.variant))
    stats = channel_stats(atlas.as_channels(output))
    return {"layer": layer, "shape": list(output.shape), "channels": len(stats["mean"]), **stats,
            "weights_used": loaded.variant}


@router.get("/models/{model}/images/{image_id}/layers/{layer}/atlas.json")
def layer_atlas_json(model: str, image_id: str, layer: str, runtime: RuntimeDep, store: ImageStoreDep,
                     activations: ActivationStoreDep, overviews: LayerOverviewsDep, architectures: ArchitecturesDep,
                     limiter: LimiterDep, response: Response, scale: ScaleQuery = "layer",
                     colormap: ColormapQuery = "auto", columns: ColumnsQuery = None,
                     weights: WeightsQuery = "auto") -> dict[str, Any]:
    """The atlas's grid geometry, colour map stops and each tile's value range (its legend)."""
    loaded = _loaded(runtime, model, weights)
    output = _output(loaded, image_id, layer, store, activations, architectures, limiter, overviews)
    spec = _layout(loaded, image_id, output, scale, colormap, columns, store, overviews, architectures, limiter)
    response.headers.update(weights_header(loaded.variant))
    return {"layer": layer, "shape": list(output.shape), **spec.as_json(), "weights_used": loaded.variant}


@router.get("/models/{model}/images/{image_id}/layers/{layer}/atlas.png")
def layer_atlas_png(model: str, image_id: str, layer: str, runtime: RuntimeDep, store: ImageStoreDep,
                    activations: ActivationStoreDep, overviews: LayerOverviewsDep, architectures: ArchitecturesDep,
                    limiter: LimiterDep, scale: ScaleQuery = "layer", colormap: ColormapQuery = "auto",
                    columns: ColumnsQuery = None, weights: WeightsQuery = "auto") -> Response:
    """Every channel of the layer in one grid picture; atlas.json with the same query describes it."""
    loaded = _loaded(runtime, model, weights)
    output = _output(loaded, image_id, layer, store, activations, architectures, limiter, overviews)
    spec = _layout(loaded, image_id, output, scale, colormap, columns, store, overviews, architectures, limiter)
    headers = {**weights_header(loaded.variant), "X-ConvScope-Grid": f"{spec.columns}x{spec.rows}",
               "X-ConvScope-Tile": f"{spec.tile_width}x{spec.tile_height}"}
    return png_response(atlas.atlas_png(output, spec), headers)


@router.get("/models/{model}/images/{image_id}/layers/{layer}/channels/{channel}.png")
def channel_picture(model: str, image_id: str, layer: str, channel: int, runtime: RuntimeDep, store: ImageStoreDep,
                    activations: ActivationStoreDep, overviews: LayerOverviewsDep, architectures: ArchitecturesDep,
                    limiter: LimiterDep, scale: ScaleQuery = "channel", colormap: ColormapQuery = "auto",
                    weights: WeightsQuery = "auto") -> Response:
    """One channel at full resolution; its value range is in the X-ConvScope-Range header (low,high)."""
    loaded = _loaded(runtime, model, weights)
    output = _output(loaded, image_id, layer, store, activations, architectures, limiter, overviews)
    channel = _channel(output, channel, layer)
    spec = _layout(loaded, image_id, output, scale, colormap, None, store, overviews, architectures, limiter)
    headers = {**weights_header(loaded.variant), "X-ConvScope-Colormap": spec.colormap,
               "X-ConvScope-Range": f"{float(spec.low[channel])!r},{float(spec.high[channel])!r}"}
    return png_response(atlas.channel_png(output, channel, spec), headers)


@router.get("/models/{model}/images/{image_id}/layers/{layer}/channels/{channel}.npy")
def channel_values(model: str, image_id: str, layer: str, channel: int, runtime: RuntimeDep, store: ImageStoreDep,
                   activations: ActivationStoreDep, overviews: LayerOverviewsDep, architectures: ArchitecturesDep,
                   limiter: LimiterDep,
                   weights: WeightsQuery = "auto") -> Response:
    """One channel's values, float32 H×W: the page reads the value under the cursor from it."""
    loaded = _loaded(runtime, model, weights)
    output = _output(loaded, image_id, layer, store, activations, architectures, limiter, overviews)
    channel = _channel(output, channel, layer)
    return npy_response(atlas.as_channels(output)[channel], weights_header(loaded.variant))


@router.get("/models/{model}/images/{image_id}/overview.json")
def layers_overview(model: str, image_id: str, runtime: RuntimeDep, store: ImageStoreDep,
                    overviews: LayerOverviewsDep, architectures: ArchitecturesDep, limiter: LimiterDep,
                    response: Response, weights: WeightsQuery = "auto") -> dict[str, Any]:
    """Every layer's value range and strongest channels; ``row`` is its row in overview.png."""
    loaded = _loaded(runtime, model, weights)
    overview = _overview(loaded, image_id, store, overviews, architectures, limiter)
    response.headers.update(weights_header(loaded.variant))
    return {**overview.as_json(), "weights_used": loaded.variant}


@router.get("/models/{model}/images/{image_id}/overview.png")
def layers_overview_png(model: str, image_id: str, runtime: RuntimeDep, store: ImageStoreDep,
                        overviews: LayerOverviewsDep, architectures: ArchitecturesDep, limiter: LimiterDep,
                        weights: WeightsQuery = "auto") -> Response:
    """Thumbnails of every layer's strongest channels, one row per layer (see overview.json)."""
    loaded = _loaded(runtime, model, weights)
    overview = _overview(loaded, image_id, store, overviews, architectures, limiter)
    return png_response(overview.png, weights_header(loaded.variant))
