"""What a channel looks for: the dataset images that excite it most, and an image optimised to excite it."""

from __future__ import annotations

import io
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from server.deps import ArchitecturesDep, RuntimeDep, WeightsQuery, weights_header
from server.errors import ApiError
from server.responses import png_response
from server.services import channel_examples as examples
from server.services.activations import selectable_layers
from server.services.channel_examples import ChannelExamples
from server.services.feature_vis import FeatureVisualisations
from server.services.model_inputs import input_picture
from server.services.model_runtime import LoadedModel
from server.settings import Settings

router = APIRouter(prefix="/api", tags=["channels"])
CHANNEL = "/models/{model}/layers/{layer}/channels/{channel}"
Seed = Annotated[int, Query(ge=0, le=9999, description="random seed of the optimisation")]
DatasetQuery = Annotated[str, Query(description="mnist | shapes | photos", json_schema_extra={"enum": ["mnist", "shapes", "photos"]})]
# examples.json's k: at most what the server keeps per channel (Settings.channel_examples_max_k; the schema
# states the default, and a server configured lower says so with 422 k_too_large)
MAX_K = Settings.model_fields["channel_examples_max_k"].default
ChannelPath = Annotated[int, Path(ge=0, le=65535, description="channel index of the layer's output")]
ExampleIndex = Annotated[int, Path(ge=0, le=10_000_000, description="the image's index in the dataset, as examples.json gives it")]


def _examples(request: Request) -> ChannelExamples:
    return request.app.state.channel_examples


def _feature_vis(request: Request) -> FeatureVisualisations:
    return request.app.state.feature_vis


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


@router.get(f"{CHANNEL}/examples.json",
            responses={202: {"description": "Still computing: the progress, and Retry-After",
                             "content": {"application/json": {}}}})
def channel_examples(model: str, layer: str, channel: ChannelPath, request: Request, runtime: RuntimeDep,
                     architectures: ArchitecturesDep, dataset: DatasetQuery = "mnist",
                     k: Annotated[int, Query(ge=1, le=MAX_K)] = 9, weights: WeightsQuery = "auto") -> Any:
    """The k dataset images whose maximum of this channel is largest, largest first (202 while computing)."""
    loaded = runtime.load(model, weights)
    _layer(loaded, architectures, layer, channel)
    service = _examples(request)
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
def example_crop(model: str, layer: str, channel: ChannelPath, index: ExampleIndex, request: Request, runtime: RuntimeDep,
                 architectures: ArchitecturesDep, dataset: DatasetQuery = "mnist",
                 weights: WeightsQuery = "auto") -> Response:
    """Dataset image ``index`` as the model sees it, cropped to this channel's receptive field around its
    maximum (only images among the channel's top examples; 404 otherwise, and while computing)."""
    loaded = runtime.load(model, weights)
    row = _layer(loaded, architectures, layer, channel)
    service = _examples(request)
    layers = selectable_layers(architectures.get(loaded.entry)["layers"])
    table, _ = service.table(loaded, dataset, layers)
    if table is None:
        raise ApiError(404, "not_ready", "The examples are still being computed; ask examples.json for progress.")
    hit = next((e for e in examples.examples_for(table, layer, channel, service.max_k) if e["index"] == index), None)
    if hit is None:
        raise ApiError(404, "not_an_example", f"{dataset} image {index} is not among the top examples of channel {channel}.")
    picture = input_picture(loaded, loaded.preprocess(service.dataset(dataset).image(index)))
    top, left, bottom, right = examples.field_box(row.get("receptive_field"), hit["y"], hit["x"], picture.height, picture.width)
    crop = picture.crop((left, top, right + 1, bottom + 1))
    buf = io.BytesIO()
    crop.save(buf, format="PNG")
    return png_response(buf.getvalue(), {**weights_header(loaded.variant), "X-ConvScope-Box": f"{top},{left},{bottom},{right}"})


@router.get(f"{CHANNEL}/feature-vis.json")
def feature_vis_status(model: str, layer: str, channel: ChannelPath, request: Request, response: Response,
                       runtime: RuntimeDep, architectures: ArchitecturesDep, seed: Seed = 0,
                       weights: WeightsQuery = "auto") -> dict[str, Any]:
    """The state of the image optimised to excite this channel: missing, queued, running (with progress), done."""
    loaded = runtime.load(model, weights)
    _layer(loaded, architectures, layer, channel)
    response.headers.update(weights_header(loaded.variant))
    return _feature_vis(request).status(loaded, layer, channel, seed)


@router.post(f"{CHANNEL}/feature-vis", status_code=202,
             responses={200: {"description": "Already made: its state", "content": {"application/json": {}}}})
def feature_vis_start(model: str, layer: str, channel: ChannelPath, request: Request, response: Response,
                      runtime: RuntimeDep, architectures: ArchitecturesDep, seed: Seed = 0,
                      weights: WeightsQuery = "auto") -> dict[str, Any]:
    """Start optimising an image for this channel (or answer the run already made or under way)."""
    loaded = runtime.load(model, weights)
    _layer(loaded, architectures, layer, channel)
    response.headers.update(weights_header(loaded.variant))
    answer = _feature_vis(request).start(loaded, layer, channel, seed)
    if answer["state"] == "done":
        response.status_code = 200
    return answer


@router.delete(f"{CHANNEL}/feature-vis")
def feature_vis_cancel(model: str, layer: str, channel: ChannelPath, request: Request, response: Response,
                       runtime: RuntimeDep, architectures: ArchitecturesDep, seed: Seed = 0,
                       weights: WeightsQuery = "auto") -> dict[str, Any]:
    """Cancel a queued or running optimisation (a finished one stays)."""
    loaded = runtime.load(model, weights)
    _layer(loaded, architectures, layer, channel)
    response.headers.update(weights_header(loaded.variant))
    return _feature_vis(request).cancel(loaded, layer, channel, seed)


@router.get(f"{CHANNEL}/feature-vis.png")
def feature_vis_png(model: str, layer: str, channel: ChannelPath, request: Request, runtime: RuntimeDep,
                    architectures: ArchitecturesDep, seed: Seed = 0, weights: WeightsQuery = "auto") -> Response:
    """The optimised image (the model's input size, as a picture); 404 until it is made."""
    loaded = runtime.load(model, weights)
    _layer(loaded, architectures, layer, channel)
    return png_response(_feature_vis(request).png(loaded, layer, channel, seed), weights_header(loaded.variant))
