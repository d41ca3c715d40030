"""What a channel looks for: the dataset images that excite it most, and an image optimised to excite it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from server.deps import ArchitecturesDep, ChannelExamplesDep, FeatureVisDep, RuntimeDep, WeightsQuery, weights_header
from server.errors import ApiError
from server.responses import png_response
from server.services import channel_examples as examples
from server.services.activations import selectable_layers
from server.services.model_runtime import LoadedModel

router = APIRouter(prefix="/api", tags=["channels"])
CHANNEL = "/models/{model}/layers/{layer}/channels/{channel}"
Seed = Annotated[int, Query(ge=0, le=9999, description="random seed of the optimisation")]
DatasetQuery = Annotated[str, Query(description="mnist | shapes | photos")]


def _layer(loaded: LoadedModel, architectures: ArchitecturesDep, layer: str, channel: int) -> dict[str, Any]:
    """The layer's table row (404 unknown layer or channel, 422 a layer without a map or vector output)."""
    loaded.layer(layer)
    rows = selectable_layers(architectures.get(loaded.entry)["layers"])
    row = next((r for r in rows if r["name"] == layer), None)
    if row is None:
        raise ApiError(422, "not_selectable", f"Layer {layer!r} has no feature-map or vector output.")
    if not 0 <= channel < row["output_shape"][0]:
        raise ApiError(404, "unknown_channel",
                       f"Layer {layer!r} has channels 0 to {row['output_shape'][0] - 1}; there is no {channel}.")
    return row


@router.get(f"{CHANNEL}/examples.json")
def channel_examples(model: str, layer: str, channel: int, runtime: RuntimeDep, service: ChannelExamplesDep,
                     architectures: ArchitecturesDep, dataset: DatasetQuery = "mnist",
                     k: Annotated[int, Query(ge=1, le=64)] = 9, weights: WeightsQuery = "auto") -> Any:
    """The k dataset images whose maximum of this channel is largest, largest first (202 while computing)."""
    loaded = runtime.load(model, weights)
    _layer(loaded, architectures, layer, channel)
    if k > service.max_k:
        raise ApiError(422, "k_too_large", f"k is at most {service.max_k} here.")
    layers = selectable_layers(architectures.get(loaded.entry)["layers"])
    table, job = service.table(loaded, dataset, layers)
    headers = weights_header(loaded.variant)
    if table is None:
        assert job is not None
        body = {"model": model, "layer": layer, "channel": channel, "dataset": dataset, **job.as_json()}
        return JSONResponse(body, status_code=202, headers={**headers, "Retry-After": "1"})
    data = service.dataset(dataset)
    found = examples.examples_for(table, layer, channel, k)
    for item in found:
        item["sample_id"] = data.sample_id(item["index"])
    return JSONResponse({"model": model, "layer": layer, "channel": channel, "dataset": dataset, "images": table.images,
                         "weights_used": loaded.variant, "examples": found}, headers=headers)


@router.get(f"{CHANNEL}/examples/{{index}}.png")
def example_crop(model: str, layer: str, channel: int, index: int, runtime: RuntimeDep, service: ChannelExamplesDep,
                 architectures: ArchitecturesDep, dataset: DatasetQuery = "mnist",
                 context: Annotated[bool, Query(description="a wider region, enlarged, with the field outlined")] = False,
                 weights: WeightsQuery = "auto") -> Response:
    """Dataset image ``index`` as the model sees it, cropped to this channel's receptive field around its
    maximum (only images among the channel's top examples; 404 otherwise, and while computing)."""
    loaded = runtime.load(model, weights)
    row = _layer(loaded, architectures, layer, channel)
    layers = selectable_layers(architectures.get(loaded.entry)["layers"])
    png, (top, left, bottom, right) = service.crop_png(loaded, dataset, layers, row, channel, index, context)
    return png_response(png, {**weights_header(loaded.variant), "X-ConvScope-Box": f"{top},{left},{bottom},{right}"})


@router.get(f"{CHANNEL}/feature-vis.json")
def feature_vis_status(model: str, layer: str, channel: int, response: Response, visuals: FeatureVisDep,
                       runtime: RuntimeDep, architectures: ArchitecturesDep, seed: Seed = 0,
                       weights: WeightsQuery = "auto") -> dict[str, Any]:
    """The state of the image optimised to excite this channel: missing, queued, running (with progress), done."""
    loaded = runtime.load(model, weights)
    _layer(loaded, architectures, layer, channel)
    response.headers.update(weights_header(loaded.variant))
    return visuals.status(loaded, layer, channel, seed)


@router.post(f"{CHANNEL}/feature-vis", status_code=202)
def feature_vis_start(model: str, layer: str, channel: int, response: Response, visuals: FeatureVisDep,
                      runtime: RuntimeDep, architectures: ArchitecturesDep, seed: Seed = 0,
                      weights: WeightsQuery = "auto") -> dict[str, Any]:
    """Start optimising an image for this channel (or answer the run already made or under way)."""
    loaded = runtime.load(model, weights)
    _layer(loaded, architectures, layer, channel)
    response.headers.update(weights_header(loaded.variant))
    answer = visuals.start(loaded, layer, channel, seed)
    if answer["state"] == "done":
        response.status_code = 200
    return answer


@router.delete(f"{CHANNEL}/feature-vis")
def feature_vis_cancel(model: str, layer: str, channel: int, response: Response, visuals: FeatureVisDep,
                       runtime: RuntimeDep, architectures: ArchitecturesDep, seed: Seed = 0,
                       weights: WeightsQuery = "auto") -> dict[str, Any]:
    """Cancel a queued or running optimisation (a finished one stays)."""
    loaded = runtime.load(model, weights)
    _layer(loaded, architectures, layer, channel)
    response.headers.update(weights_header(loaded.variant))
    return visuals.cancel(loaded, layer, channel, seed)


@router.get(f"{CHANNEL}/feature-vis.png")
def feature_vis_png(model: str, layer: str, channel: int, runtime: RuntimeDep, visuals: FeatureVisDep,
                    architectures: ArchitecturesDep, seed: Seed = 0, weights: WeightsQuery = "auto") -> Response:
    """The optimised image (the model's input size, as a picture); 404 until it is made."""
    loaded = runtime.load(model, weights)
    _layer(loaded, architectures, layer, channel)
    return png_response(visuals.png(loaded, layer, channel, seed), weights_header(loaded.variant))
