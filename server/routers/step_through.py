"""Step-through traces of a real model: one output cell of a conv / pool / activation layer, and softmax."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from server.deps import LayerDep, LoadedModelDep, StepThroughDep
from server.responses import npy_response
from server.services.step_through import trace as conv_trace

router = APIRouter(prefix="/api", tags=["step-through"])

Index = Annotated[int, Query(ge=0, le=1_000_000)]


@router.get("/models/{model}/images/{image_id}/layers/{layer}/trace")
def layer_trace(image_id: str, layer: LayerDep, loaded: LoadedModelDep, traces: StepThroughDep,
                channel: Index = 0, y: Index = 0, x: Index = 0,
                top: Annotated[int, Query(ge=1, le=conv_trace.MAX_TOP)] = 8) -> dict[str, Any]:
    """Every number behind output cell (channel, y, x) of a conv, pool or activation layer."""
    cap = traces.capture(loaded, image_id, layer)
    trace = conv_trace.layer_trace(cap, layer.module, channel, y, x, top)
    return {"model": loaded.entry.id, "image_id": image_id, "layer": layer.name, "type": type(layer.module).__name__,
            "weights_used": loaded.variant, **trace}


@router.get("/models/{model}/images/{image_id}/layers/{layer}/trace/input.npy")
def layer_input(image_id: str, layer: LayerDep, loaded: LoadedModelDep, traces: StepThroughDep,
                channel: Annotated[int | None, Query(ge=0, le=65535)] = None) -> Response:
    """The tensor entering the layer (C×H×W float32), or one channel of it (H×W)."""
    tensor = traces.capture(loaded, image_id, layer).input
    if channel is not None:
        conv_trace.check_position(tuple(tensor.shape), channel, 0, 0, "input")
        tensor = tensor[channel]
    return npy_response(tensor.numpy())


@router.get("/models/{model}/images/{image_id}/layers/{layer}/trace/output.npy")
def layer_output(image_id: str, layer: LayerDep, loaded: LoadedModelDep, traces: StepThroughDep,
                 channel: Annotated[int | None, Query(ge=0, le=65535)] = None,
                 stage: Literal["layer", "final"] = "layer") -> Response:
    """The layer's output (``stage=final``: after the batch norm / activation that follow it)."""
    cap = traces.capture(loaded, image_id, layer)
    tensor = cap.after[-1][2] if stage == "final" and cap.after else cap.output
    if channel is not None:
        conv_trace.check_position(tuple(tensor.shape), channel, 0, 0)
        tensor = tensor[channel]
    return npy_response(tensor.numpy())


@router.get("/models/{model}/images/{image_id}/softmax")
def softmax(image_id: str, loaded: LoadedModelDep, traces: StepThroughDep,
            top: Annotated[int, Query(ge=1, le=1000)] = 10) -> dict[str, Any]:
    """Softmax at the output: logits, exponentials, their sum and the probabilities."""
    return {"model": loaded.entry.id, "image_id": image_id, "weights_used": loaded.variant,
            **traces.softmax(loaded, image_id, top)}
