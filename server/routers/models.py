"""Models, their architecture, their weights (as .npy) and weight downloads."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Response

from models.registry import ModelEntry
from server.deps import (
    ArchitecturesDep,
    ChannelExamplesDep,
    ClientAddressDep,
    DownloadsDep,
    LayerDep,
    LoadedModelDep,
    ModelUploadsDep,
    RuntimeDep,
    WeightsQuery,
    weights_header,
)
from server.errors import ApiError
from server.openapi import json_example
from server.responses import npy_response
from server.services.channels import ChannelExamples
from server.services.runtime.model_runtime import LoadedModel, ModelLayer, ModelRuntime
from server.services.saliency.layer_choice import default_layer

router = APIRouter(prefix="/api", tags=["models"])


def model_summary(entry: ModelEntry, runtime: ModelRuntime, channel_examples: ChannelExamples) -> dict[str, Any]:
    status = runtime.weights_status(entry)
    return {
        "id": entry.id,
        "title": entry.title,
        "dataset": entry.dataset,
        "family": entry.family,
        "description": entry.description,
        "input": {"channels": entry.input.channels, "height": entry.input.height, "width": entry.input.width},
        "num_classes": entry.num_classes,
        "weights": {"state": status.state, "detail": status.detail},
        "load": runtime.load_state(entry),  # models are built on first use: loaded, loading or not_loaded
        "default_layer": default_layer(entry),
        "examples_dataset": channel_examples.default_dataset(entry),
        "metrics": entry.weights.metrics(),
    }


@router.get("/models", summary="Every model: input size, classes, the state of its weights",
            responses=json_example({"models": [{"id": "lenet5", "title": "LeNet-5", "dataset": "mnist",
                                                "input": {"channels": 1, "height": 28, "width": 28},
                                                "num_classes": 10, "weights": {"state": "bundled",
                                                                               "detail": "trained on MNIST"},
                                                "load": "loaded"}]}))
def list_models(runtime: RuntimeDep, channel_examples: ChannelExamplesDep, uploads: ModelUploadsDep,
                client: ClientAddressDep) -> dict[str, list[dict[str, Any]]]:
    return {"models": [model_summary(entry, runtime, channel_examples)
                       for entry in uploads.visible(runtime.entries(), client)]}


@router.get("/models/{model}", summary="One model with its layers (name, type, output shape, parameters)")
def model_detail(model: str, runtime: RuntimeDep, architectures: ArchitecturesDep, response: Response,
                 channel_examples: ChannelExamplesDep, weights: WeightsQuery = "auto") -> dict[str, Any]:
    entry = runtime.entry(model)
    variant = runtime.resolve_variant(entry, weights)
    response.headers.update(weights_header(variant))
    return {**model_summary(entry, runtime, channel_examples), "weights_used": variant, **architectures.get(entry)}


def _parameter(loaded: LoadedModel, layer: ModelLayer, name: str) -> Response:
    module = layer.module
    tensor = getattr(module, name, None)
    if tensor is None or not hasattr(tensor, "detach"):
        raise ApiError(404, f"no_{name}",
                       f"Layer {layer.name!r} of {loaded.entry.id} ({type(module).__name__}) has no {name}.")
    array = tensor.detach().float().cpu().numpy().astype(np.float32)
    return npy_response(array)


@router.get("/models/{model}/layers/{layer}/weights.npy",
            summary="A layer's weight tensor as PyTorch holds it (conv: O×I/groups×kh×kw), float32 .npy")
def layer_weights(layer: LayerDep, loaded: LoadedModelDep) -> Response:
    return _parameter(loaded, layer, "weight")


@router.get("/models/{model}/layers/{layer}/bias.npy", summary="A layer's bias, float32 .npy (404 where it has none)")
def layer_bias(layer: LayerDep, loaded: LoadedModelDep) -> Response:
    return _parameter(loaded, layer, "bias")


@router.post("/models/{model}/weights/download", status_code=202,
             summary="Start downloading a torchvision model's ImageNet weights (hash-checked)")
def start_download(model: str, downloads: DownloadsDep) -> dict[str, Any]:
    return downloads.start(model).as_json()


@router.get("/models/{model}/weights/download", summary="Progress of a weights download")
def download_progress(model: str, downloads: DownloadsDep) -> dict[str, Any]:
    return downloads.get(model).as_json()
