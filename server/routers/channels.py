"""What a channel looks for: the dataset images that excite it most, and an image optimised to excite it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import JSONResponse

from server.deps import ArchitecturesDep, ChannelExamplesDep, FeatureVisDep, RuntimeDep, WeightsQuery, weights_header
from server.errors import ApiError
from server.openapi import binary, json_example
from server.responses import png_response
from server.services import channel_examples as examples
from server.services.activations import selectable_layers
from server.services.model_runtime import LoadedModel

router = APIRouter(prefix="/api", tags=["channels"])
CHANNEL = "/models/{model}/layers/{layer}/channels/{channel}"
Seed = Annotated[int, Query(ge=0, le=9999, description="random seed of the optimisation")]
DatasetQuery = Annotated[Literal["mnist", "shapes", "photos"],
                         Query(description="mnist: the 10,000 MNIST test images; shapes: the Shapes test split; "
                                           "photos: the gallery photos")]
Channel = Annotated[int, Path(ge=0, le=1_000_000, description="the channel (a unit for vector layers)")]
DatasetIndex = Annotated[int, Path(ge=0, le=1_000_000, description="the image's index in the dataset")]
EXAMPLE = {"model": "lenet5", "layer": "features.3", "channel": 5, "dataset": "mnist", "images": 10000,
           "weights_used": "trained", "examples": [{"index": 8519, "value": 12.0, "y": 4, "x": 2, "sample_id": "mnist-test-8519"}]}
COMPUTING = {"model": "lenet5", "layer": "features.3", "channel": 5, "dataset": "mnist", "state": "running",
             "progress": {"done": 2500, "total": 10000}}
VIS = {"state": "running", "progress": {"done": 40, "total": 128}, "objective": 1.9, "seed": 0}


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


@router.get(f"{CHANNEL}/examples.json", responses={
    **json_example(EXAMPLE), **json_example(COMPUTING, 202, "Being precomputed for this model and dataset: poll again "
                                                          "after Retry-After seconds")})
def channel_examples(model: str, layer: str, channel: Channel, runtime: RuntimeDep, service: ChannelExamplesDep,
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


@router.get(f"{CHANNEL}/examples/{{index}}.png", responses=binary("image/png", "The crop (or, with context, the "
                                                                              "region with the field outlined)."))
def example_crop(model: str, layer: str, channel: Channel, index: DatasetIndex, runtime: RuntimeDep, service: ChannelExamplesDep,
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
def feature_vis_status(model: str, layer: str, channel: Channel, response: Response, visuals: FeatureVisDep,
                       runtime: RuntimeDep, architectures: ArchitecturesDep, seed: Seed = 0,
                       weights: WeightsQuery = "auto") -> dict[str, Any]:
    """The state of the image optimised to excite this channel: missing, queued, running (with progress), done."""
    loaded = runtime.load(model, weights)
    _layer(loaded, architectures, layer, channel)
    response.headers.update(weights_header(loaded.variant))
    return visuals.status(loaded, layer, channel, seed)


@router.post(f"{CHANNEL}/feature-vis", status_code=202, responses={
    **json_example(VIS, 202, "Started (or already queued or running)"),
    **json_example({**VIS, "state": "done"}, 200, "Already made: nothing started")})
def feature_vis_start(model: str, layer: str, channel: Channel, response: Response, visuals: FeatureVisDep,
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
def feature_vis_cancel(model: str, layer: str, channel: Channel, response: Response, visuals: FeatureVisDep,
                       runtime: RuntimeDep, architectures: ArchitecturesDep, seed: Seed = 0,
                       weights: WeightsQuery = "auto") -> dict[str, Any]:
    """Cancel a queued or running optimisation (a finished one stays)."""
    loaded = runtime.load(model, weights)
    _layer(loaded, architectures, layer, channel)
    response.headers.update(weights_header(loaded.variant))
    return visuals.cancel(loaded, layer, channel, seed)


@router.get(f"{CHANNEL}/feature-vis.png", responses=binary("image/png", "The optimised picture."))
def feature_vis_png(model: str, layer: str, channel: Channel, runtime: RuntimeDep, visuals: FeatureVisDep,
                    architectures: ArchitecturesDep, seed: Seed = 0, weights: WeightsQuery = "auto") -> Response:
    """The optimised image (the model's input size, as a picture); 404 until it is made."""
    loaded = runtime.load(model, weights)
    _layer(loaded, architectures, layer, channel)
    return png_response(visuals.png(loaded, layer, channel, seed), weights_header(loaded.variant))
