"""Step-through traces of a real model: one output cell of a conv / pool / activation layer, and softmax."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response

from server.deps import ImageStoreDep, LimiterDep, RuntimeDep, WeightsQuery, weights_header
from server.responses import npy_response
from server.services import conv_trace
from server.services.image_store import ImageStore
from server.services.model_inputs import input_batch
from server.services.model_runtime import LoadedModel
from server.services.work_limiter import WorkLimiter

router = APIRouter(prefix="/api", tags=["step-through"])

Index = Annotated[int, Query(ge=0, le=1_000_000)]


def _capture(request: Request, loaded: LoadedModel, store: ImageStore, limiter: WorkLimiter, image_id: str,
             layer: str) -> conv_trace.LayerCapture:
    loaded.layer(layer)  # 404 for an unknown layer before any work
    cache = request.app.state.trace_captures
    key = (loaded.entry.id, loaded.variant, image_id, layer)
    hit = cache.get(key)
    if hit is None:
        batch = input_batch(loaded, store, image_id)
        with limiter.admit():
            hit = conv_trace.capture(loaded, batch, layer)
        cache.put(key, hit)
    return hit


@router.get("/models/{model}/images/{image_id}/layers/{layer}/trace")
def layer_trace(model: str, image_id: str, layer: str, request: Request, response: Response, runtime: RuntimeDep,
                store: ImageStoreDep, limiter: LimiterDep, channel: Index = 0, y: Index = 0, x: Index = 0,
                top: Annotated[int, Query(ge=1, le=conv_trace.MAX_TOP)] = 8,
                weights: WeightsQuery = "auto") -> dict[str, Any]:
    """Every number behind output cell (channel, y, x) of a conv, pool or activation layer."""
    loaded = runtime.load(model, weights)
    cap = _capture(request, loaded, store, limiter, image_id, layer)
    module = loaded.layer(layer)
    response.headers.update(weights_header(loaded.variant))
    trace = conv_trace.layer_trace(cap, module, channel, y, x, top)
    return {"model": model, "image_id": image_id, "layer": layer, "type": type(module).__name__,
            "weights_used": loaded.variant, **trace}


@router.get("/models/{model}/images/{image_id}/layers/{layer}/trace/input.npy")
def layer_input(model: str, image_id: str, layer: str, request: Request, runtime: RuntimeDep, store: ImageStoreDep,
                limiter: LimiterDep, channel: Annotated[int | None, Query(ge=0, le=65535)] = None,
                weights: WeightsQuery = "auto") -> Response:
    """The tensor entering the layer (C×H×W float32), or one channel of it (H×W)."""
    loaded = runtime.load(model, weights)
    cap = _capture(request, loaded, store, limiter, image_id, layer)
    tensor = cap.input
    if channel is not None:
        conv_trace.check_position(tuple(tensor.shape), channel, 0, 0, "input")
        tensor = tensor[channel]
    return npy_response(tensor.numpy(), weights_header(loaded.variant))


@router.get("/models/{model}/images/{image_id}/layers/{layer}/trace/output.npy")
def layer_output(model: str, image_id: str, layer: str, request: Request, runtime: RuntimeDep, store: ImageStoreDep,
                 limiter: LimiterDep, channel: Annotated[int | None, Query(ge=0, le=65535)] = None,
                 stage: Literal["layer", "final"] = "layer", weights: WeightsQuery = "auto") -> Response:
    """The layer's output (``stage=final``: after the batch norm / activation that follow it)."""
    loaded = runtime.load(model, weights)
    cap = _capture(request, loaded, store, limiter, image_id, layer)
    tensor = cap.after[-1][2] if stage == "final" and cap.after else cap.output
    if channel is not None:
        conv_trace.check_position(tuple(tensor.shape), channel, 0, 0)
        tensor = tensor[channel]
    return npy_response(tensor.numpy(), weights_header(loaded.variant))


@router.get("/models/{model}/images/{image_id}/softmax")
def softmax(model: str, image_id: str, response: Response, runtime: RuntimeDep, store: ImageStoreDep,
            limiter: LimiterDep, top: Annotated[int, Query(ge=1, le=1000)] = 10,
            weights: WeightsQuery = "auto") -> dict[str, Any]:
    """Softmax at the output: logits, exponentials, their sum and the probabilities."""
    import torch

    loaded = runtime.load(model, weights)
    batch = input_batch(loaded, store, image_id)
    with limiter.admit(), torch.no_grad():
        logits = loaded.module(batch)[0]
    response.headers.update(weights_header(loaded.variant))
    return {"model": model, "image_id": image_id, "weights_used": loaded.variant,
            **conv_trace.softmax_trace(logits, loaded.entry.categories, top)}
