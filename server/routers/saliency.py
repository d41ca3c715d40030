"""Saliency maps of stored images: values (.npy), signed raw maps, PNG overlays, the top-k at once."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, urlencode

import numpy as np
from fastapi import APIRouter, Query, Response

from server.deps import ImageStoreDep, LimiterDep, RuntimeDep, WeightsQuery, weights_header
from server.responses import npy_response, png_response
from server.services.colormaps import COLORMAPS, is_diverging
from server.services.image_store import ImageStore
from server.services.model_inputs import input_batch, input_picture, input_tensor
from server.services.model_runtime import LoadedModel, ModelRuntime
from server.services.saliency import describe_methods
from server.services.saliency.methods import DEFAULT_METHOD, get_method
from server.services.saliency.overlay import DEFAULT_COLORMAP, check_colormap, legend, overlay_png
from server.services.saliency.service import (
    CACHE,
    PROGRESS,
    SaliencyKey,
    SaliencyMap,
    make_key,
    saliency_map,
    top_k_maps,
)
from server.services.saliency.topk import DEFAULT_K
from server.services.work_limiter import WorkLimiter

router = APIRouter(prefix="/api", tags=["saliency"])

MethodQuery = Annotated[str, Query(description="a saliency method name; see /api/saliency/methods")]
LayerQuery = Annotated[str | None, Query(description="a layer name; default: the model's last conv block")]
TargetQuery = Annotated[int | None, Query(ge=0, description="class index; default: the top-1 class")]
ColormapQuery = Annotated[str, Query(description="colour map name")]
OpacityQuery = Annotated[float, Query(ge=0.0, le=1.0, description="0: the input only, 1: the map only")]


@router.get("/saliency/methods")
def methods() -> dict[str, Any]:
    """The methods (for the page's picker) and the colour maps with their legend stops."""
    return {
        "methods": describe_methods(),
        "default": DEFAULT_METHOD,
        "default_colormap": DEFAULT_COLORMAP,
        "colormaps": {name: legend(name)["stops"] for name in COLORMAPS if not is_diverging(name)},
    }


@router.get("/models/{model}/classes")
def classes(model: str, runtime: RuntimeDep) -> dict[str, Any]:
    """Every class label of the model, in index order (for the page's search over all labels)."""
    entry = runtime.entry(model)
    return {"model": entry.id, "classes": list(entry.categories)}


def _resolve(
    runtime: ModelRuntime, model: str, weights: str, image_id: str, method: str, layer: str | None, target: int | None
) -> tuple[LoadedModel, SaliencyKey]:
    loaded = runtime.load(model, weights)
    return loaded, make_key(loaded, image_id, method, layer, target)


def _map(
    runtime: ModelRuntime,
    store: ImageStore,
    limiter: WorkLimiter,
    model: str,
    weights: str,
    image_id: str,
    method: str,
    layer: str | None,
    target: int | None,
) -> tuple[LoadedModel, SaliencyKey, SaliencyMap]:
    loaded, key = _resolve(runtime, model, weights, image_id, method, layer, target)
    hit = CACHE.get(key)
    if hit is None:
        batch = input_batch(loaded, store, image_id)
        with limiter.admit():
            hit = saliency_map(loaded, batch, key)
    return loaded, key, hit


def _url(key: SaliencyKey, suffix: str, target: int | None, **extra: Any) -> str:
    params: dict[str, Any] = {"method": key.method}
    if key.layer is not None:
        params["layer"] = key.layer
    if target is not None:
        params["target"] = target
    params["weights"] = key.variant
    params.update(extra)
    return f"/api/models/{quote(key.model, safe='')}/images/{quote(key.image_id, safe='')}/saliency{suffix}?{urlencode(params)}"


def _info(key: SaliencyKey, result: SaliencyMap, colormap: str) -> dict[str, Any]:
    return {
        "index": result.target,
        "label": result.label,
        "probability": result.probability,
        "logit": result.logit,
        "low": result.low,
        "high": result.high,
        "empty": result.high <= result.low,
        "shape": list(result.values.shape),
        "raw_shape": list(result.raw.shape),
        "urls": {
            "npy": _url(key, ".npy", result.target),
            "raw": _url(key, "/raw.npy", result.target),
            "png": _url(key, ".png", result.target, colormap=colormap, opacity=1),
            "overlay": _url(key, ".png", result.target, colormap=colormap, opacity=0.5),
        },
    }


def _method_info(method: str) -> dict[str, Any]:
    saliency = get_method(method)
    return {"name": saliency.name, "title": saliency.title, "display": saliency.display, "family": saliency.family}


@router.get("/models/{model}/images/{image_id}/saliency.npy")
def saliency_npy(
    model: str,
    image_id: str,
    runtime: RuntimeDep,
    store: ImageStoreDep,
    limiter: LimiterDep,
    method: MethodQuery = DEFAULT_METHOD,
    layer: LayerQuery = None,
    target: TargetQuery = None,
    weights: WeightsQuery = "auto",
) -> Response:
    """float32 H×W at input resolution in [0, 1]."""
    loaded, _, result = _map(runtime, store, limiter, model, weights, image_id, method, layer, target)
    return npy_response(result.values, weights_header(loaded.variant))


@router.get("/models/{model}/images/{image_id}/saliency/raw.npy")
def saliency_raw(
    model: str,
    image_id: str,
    runtime: RuntimeDep,
    store: ImageStoreDep,
    limiter: LimiterDep,
    method: MethodQuery = DEFAULT_METHOD,
    layer: LayerQuery = None,
    target: TargetQuery = None,
    weights: WeightsQuery = "auto",
) -> Response:
    """The signed map before ReLU and scaling: CAMs at the layer's resolution, gradient methods at the
    input's (summed over input channels)."""
    loaded, _, result = _map(runtime, store, limiter, model, weights, image_id, method, layer, target)
    return npy_response(result.raw, weights_header(loaded.variant))


@router.get("/models/{model}/images/{image_id}/saliency.png")
def saliency_png(
    model: str,
    image_id: str,
    runtime: RuntimeDep,
    store: ImageStoreDep,
    limiter: LimiterDep,
    method: MethodQuery = DEFAULT_METHOD,
    layer: LayerQuery = None,
    target: TargetQuery = None,
    colormap: ColormapQuery = DEFAULT_COLORMAP,
    opacity: OpacityQuery = 0.5,
    weights: WeightsQuery = "auto",
) -> Response:
    """The colour-mapped map over the model's input picture (``opacity`` 1: the map alone)."""
    check_colormap(colormap)
    loaded, _, result = _map(runtime, store, limiter, model, weights, image_id, method, layer, target)
    picture = input_picture(loaded, input_tensor(loaded, store, image_id))
    return png_response(overlay_png(result.values, picture, colormap, opacity), weights_header(loaded.variant))


@router.get("/models/{model}/images/{image_id}/saliency.json")
def saliency_json(
    model: str,
    image_id: str,
    runtime: RuntimeDep,
    store: ImageStoreDep,
    limiter: LimiterDep,
    response: Response,
    method: MethodQuery = DEFAULT_METHOD,
    layer: LayerQuery = None,
    target: TargetQuery = None,
    colormap: ColormapQuery = DEFAULT_COLORMAP,
    weights: WeightsQuery = "auto",
) -> dict[str, Any]:
    """One class's map described: its class, the raw values 0 and 1 stand for, and its URLs."""
    check_colormap(colormap)
    loaded, key, result = _map(runtime, store, limiter, model, weights, image_id, method, layer, target)
    response.headers.update(weights_header(loaded.variant))
    return {
        "method": _method_info(method),
        "layer": key.layer,
        "weights_used": loaded.variant,
        "legend": legend(colormap),
        "map": _info(key, result, colormap),
    }


def _top_k(
    runtime: ModelRuntime,
    store: ImageStore,
    limiter: LimiterDep,
    model: str,
    weights: str,
    image_id: str,
    method: str,
    layer: str | None,
    k: int,
) -> tuple[LoadedModel, SaliencyKey, list[SaliencyMap]]:
    loaded, key = _resolve(runtime, model, weights, image_id, method, layer, None)
    batch = input_batch(loaded, store, image_id)
    with limiter.admit():
        _, maps = top_k_maps(loaded, batch, key, k)
    return loaded, key, maps


KQuery = Annotated[int, Query(ge=1, le=20, description="how many of the top classes")]


@router.get("/models/{model}/images/{image_id}/saliency/topk.json")
def saliency_top_k(
    model: str,
    image_id: str,
    runtime: RuntimeDep,
    store: ImageStoreDep,
    limiter: LimiterDep,
    response: Response,
    method: MethodQuery = DEFAULT_METHOD,
    layer: LayerQuery = None,
    k: KQuery = DEFAULT_K,
    colormap: ColormapQuery = DEFAULT_COLORMAP,
    weights: WeightsQuery = "auto",
) -> dict[str, Any]:
    """The top-k predictions and each one's map, from one pass; each class's URLs are then cache hits."""
    check_colormap(colormap)
    loaded, key, maps = _top_k(runtime, store, limiter, model, weights, image_id, method, layer, k)
    response.headers.update(weights_header(loaded.variant))
    return {
        "method": _method_info(method),
        "layer": key.layer,
        "weights_used": loaded.variant,
        "legend": legend(colormap),
        "npy": _url(key, "/topk.npy", None, k=k),
        "classes": [_info(key, m, colormap) for m in maps],
    }


@router.get("/models/{model}/images/{image_id}/saliency/topk.npy")
def saliency_top_k_npy(
    model: str,
    image_id: str,
    runtime: RuntimeDep,
    store: ImageStoreDep,
    limiter: LimiterDep,
    method: MethodQuery = DEFAULT_METHOD,
    layer: LayerQuery = None,
    k: KQuery = DEFAULT_K,
    weights: WeightsQuery = "auto",
) -> Response:
    """k×H×W float32: the top-k classes' maps in prediction order."""
    loaded, _, maps = _top_k(runtime, store, limiter, model, weights, image_id, method, layer, k)
    return npy_response(np.stack([m.values for m in maps]), weights_header(loaded.variant))


@router.get("/models/{model}/images/{image_id}/saliency/progress")
def saliency_progress(
    model: str,
    image_id: str,
    runtime: RuntimeDep,
    response: Response,
    method: MethodQuery = DEFAULT_METHOD,
    layer: LayerQuery = None,
    weights: WeightsQuery = "auto",
) -> dict[str, Any]:
    """How far a long run (Score-CAM, occlusion, SmoothGrad…) for this image and method has got."""
    loaded, key = _resolve(runtime, model, weights, image_id, method, layer, None)
    response.headers.update(weights_header(loaded.variant))
    return PROGRESS.get(key)
