"""Saliency maps of stored images: values (.npy), signed raw maps, PNG overlays, the top-k at once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import numpy as np
from fastapi import APIRouter, Depends, Query, Response

from server.deps import (
    InputsDep,
    LoadedModelDep,
    RuntimeDep,
    SaliencyLayerDep,
    SaliencyMapsDep,
    SaliencyMethodDep,
    TargetDep,
)
from server.responses import npy_response, png_response
from server.services.rendering.colormaps import COLORMAPS, is_diverging
from server.services.runtime.inputs import input_picture
from server.services.runtime.model_runtime import LoadedModel
from server.services.saliency import describe_methods
from server.services.saliency.base import SaliencyMethod
from server.services.saliency.border import describe_border
from server.services.saliency.methods import DEFAULT_METHOD
from server.services.saliency.overlay import DEFAULT_COLORMAP, check_colormap, legend, overlay_png
from server.services.saliency.service import SaliencyKey, SaliencyMap, make_key
from server.services.saliency.topk import DEFAULT_K, MAX_K

router = APIRouter(prefix="/api", tags=["saliency"])

# Method, layer and target are resolved once by server.deps; colour maps are checked against the enum's list.
ColormapQuery = Annotated[str, Query(description="colour map name", json_schema_extra={"enum": list(COLORMAPS)})]
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


@dataclass(frozen=True)
class SaliencyQuery:
    """What every saliency URL names, resolved: the loaded model (weights variant) and the result key."""

    loaded: LoadedModel
    key: SaliencyKey


async def one_class(
    image_id: str, loaded: LoadedModelDep, method: SaliencyMethodDep, layer: SaliencyLayerDep, target: TargetDep,
) -> SaliencyQuery:
    return SaliencyQuery(loaded, make_key(loaded, image_id, method, layer, target))


async def any_class(
    image_id: str, loaded: LoadedModelDep, method: SaliencyMethodDep, layer: SaliencyLayerDep,
) -> SaliencyQuery:
    return SaliencyQuery(loaded, make_key(loaded, image_id, method, layer, None))


OneClass = Annotated[SaliencyQuery, Depends(one_class)]
AnyClass = Annotated[SaliencyQuery, Depends(any_class)]
KQuery = Annotated[int, Query(ge=1, le=MAX_K, description="how many of the top classes (at most the model's)")]
MAP = "/models/{model}/images/{image_id}/saliency"


def _url(key: SaliencyKey, suffix: str, target: int | None, **extra: Any) -> str:
    params: dict[str, Any] = {"method": key.method}
    if key.layer is not None:
        params["layer"] = key.layer
    if target is not None:
        params["target"] = target
    params["weights"] = key.variant
    params.update(extra)
    return f"/api/models/{quote(key.model, safe='')}/images/{quote(key.image_id, safe='')}/saliency{suffix}?{urlencode(params)}"


def _info(query: SaliencyQuery, result: SaliencyMap, colormap: str) -> dict[str, Any]:
    key = query.key
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
        "border": describe_border(query.loaded, key.layer, result.raw),
        "urls": {
            "npy": _url(key, ".npy", result.target),
            "raw": _url(key, "/raw.npy", result.target),
            "png": _url(key, ".png", result.target, colormap=colormap, opacity=1),
            "overlay": _url(key, ".png", result.target, colormap=colormap, opacity=0.5),
        },
    }


def _method_info(saliency: SaliencyMethod) -> dict[str, Any]:
    return {"name": saliency.name, "title": saliency.title, "display": saliency.display, "family": saliency.family}


@router.get(MAP + ".npy")
def saliency_npy(query: OneClass, maps: SaliencyMapsDep) -> Response:
    """float32 H×W at input resolution in [0, 1]."""
    return npy_response(maps.map(query.loaded, query.key).values)


@router.get(MAP + "/raw.npy")
def saliency_raw(query: OneClass, maps: SaliencyMapsDep) -> Response:
    """The signed map before ReLU and scaling: CAMs at the layer's resolution, gradient methods at the
    input's (summed over input channels)."""
    return npy_response(maps.map(query.loaded, query.key).raw)


@router.get(MAP + ".png")
def saliency_png(
    query: OneClass,
    maps: SaliencyMapsDep,
    inputs: InputsDep,
    colormap: ColormapQuery = DEFAULT_COLORMAP,
    opacity: OpacityQuery = 0.5,
) -> Response:
    """The colour-mapped map over the model's input picture (``opacity`` 1: the map alone)."""
    check_colormap(colormap)
    result = maps.map(query.loaded, query.key)
    picture = input_picture(query.loaded, inputs.tensor(query.loaded, query.key.image_id))
    return png_response(overlay_png(result.values, picture, colormap, opacity))


@router.get(MAP + ".json")
def saliency_json(
    query: OneClass, maps: SaliencyMapsDep, colormap: ColormapQuery = DEFAULT_COLORMAP
) -> dict[str, Any]:
    """One class's map described: its class, the raw values 0 and 1 stand for, and its URLs."""
    check_colormap(colormap)
    result = maps.map(query.loaded, query.key)
    return {**_described(query, colormap), "map": _info(query, result, colormap)}


@router.get(MAP + "/topk.json")
def saliency_top_k(
    query: AnyClass,
    maps: SaliencyMapsDep,
    k: KQuery = DEFAULT_K,
    colormap: ColormapQuery = DEFAULT_COLORMAP,
) -> dict[str, Any]:
    """The top-k predictions and each one's map, from one pass; each class's URLs are then cache hits."""
    check_colormap(colormap)
    _, found = maps.top_k(query.loaded, query.key, k)
    return {
        **_described(query, colormap),
        "npy": _url(query.key, "/topk.npy", None, k=k),
        "classes": [_info(query, m, colormap) for m in found],
    }


@router.get(MAP + "/topk.npy")
def saliency_top_k_npy(query: AnyClass, maps: SaliencyMapsDep, k: KQuery = DEFAULT_K) -> Response:
    """k×H×W float32: the top-k classes' maps in prediction order."""
    _, found = maps.top_k(query.loaded, query.key, k)
    return npy_response(np.stack([m.values for m in found]))


@router.get(MAP + "/progress")
def saliency_progress(query: AnyClass, maps: SaliencyMapsDep) -> dict[str, Any]:
    """How far a long run (Score-CAM, occlusion, SmoothGrad…) for this image and method has got."""
    return maps.progress.get(query.key)


def _described(query: SaliencyQuery, colormap: str) -> dict[str, Any]:
    return {
        "method": _method_info(query.key.method_object),
        "layer": query.key.layer,
        "weights_used": query.loaded.variant,
        "legend": legend(colormap),
    }
