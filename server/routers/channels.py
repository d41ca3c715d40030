"""What a channel looks for: the dataset images that excite it most, and an image optimised to excite it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.responses import JSONResponse

from server.deps import ArchitecturesDep, ChannelExamplesDep, FeatureVisDep, LayerDep, LoadedModelDep
from server.errors import ApiError
from server.openapi import binary, json_example
from server.responses import png_response
from server.services.channels import examples
from server.services.feature_maps.activations import selectable_layers
from server.services.runtime.model_runtime import LoadedModel, ModelLayer

router = APIRouter(prefix="/api", tags=["channels"])
CHANNEL = "/models/{model}/layers/{layer}/channels/{channel}"
Seed = Annotated[int, Query(ge=0, le=9999, description="random seed of the optimisation")]
DatasetQuery = Annotated[str, Query(
    pattern=r"^(mnist|shapes|photos|folder:[A-Za-z0-9][A-Za-z0-9_-]{0,39})$",
    description="mnist: the 10,000 MNIST test images; shapes: the Shapes test split; photos: the gallery "
                "photos; folder:NAME: a named image folder (convscope serve --image-folder NAME=PATH). "
                "Default: the model's own (examples_dataset in /api/models/{model})")]
Channel = Annotated[int, Path(ge=0, le=1_000_000, description="the channel (a unit for vector layers)")]
DatasetIndex = Annotated[int, Path(ge=0, le=1_000_000, description="the image's index in the dataset")]
EXAMPLE = {"model": "lenet5", "layer": "features.3", "channel": 5, "dataset": "mnist", "images": 10000,
           "weights_used": "trained", "examples": [{"index": 8519, "value": 12.0, "y": 4, "x": 2, "sample_id": "mnist-test-8519"}]}
COMPUTING = {"model": "lenet5", "layer": "features.3", "channel": 5, "dataset": "mnist", "state": "running",
             "progress": {"done": 2500, "total": 10000}}
VIS = {"state": "running", "progress": {"done": 40, "total": 128}, "objective": 1.9, "seed": 0}


@dataclass(frozen=True)
class ChannelQuery:
    """What every channel URL names, resolved: the loaded model (weights variant), the layer and channel, and
    the model's selectable layers."""

    model: str
    loaded: LoadedModel
    layer: str
    resolved: ModelLayer  # the layer's module, found once by ``LayerDep``
    channel: int
    row: dict[str, Any]  # the layer's architecture row
    layers: list[dict[str, Any]]  # every selectable layer's row


def one_channel(resolved: LayerDep, channel: Channel, loaded: LoadedModelDep,
                architectures: ArchitecturesDep) -> ChannelQuery:
    """404 unknown layer or channel, 422 a layer without a map or vector output. (A plain def: the first
    request for a model traces its architecture, which belongs in a worker thread.)"""
    layer = resolved.name
    layers = selectable_layers(architectures.get(loaded.entry)["layers"])
    row = next((r for r in layers if r["name"] == layer), None)
    if row is None:
        raise ApiError(422, "not_selectable", f"Layer {layer!r} has no feature-map or vector output.")
    if not 0 <= channel < row["output_shape"][0]:
        raise ApiError(404, "unknown_channel",
                       f"Layer {layer!r} has channels 0 to {row['output_shape'][0] - 1}; there is no {channel}.")
    return ChannelQuery(loaded.entry.id, loaded, layer, resolved, channel, row, layers)


OneChannel = Annotated[ChannelQuery, Depends(one_channel)]


@router.get(f"{CHANNEL}/examples.json", responses={
    **json_example(EXAMPLE), **json_example(COMPUTING, 202, "Being precomputed for this model and dataset: poll again "
                                                          "after Retry-After seconds")})
def channel_examples(q: OneChannel, service: ChannelExamplesDep, dataset: DatasetQuery | None = None,
                     k: Annotated[int, Query(ge=1, le=64)] = 9) -> Any:
    """The k dataset images whose maximum of this channel is largest, largest first (202 while computing).
    ``source`` says in words which images, and how many, the examples come from."""
    if k > service.max_k:
        raise ApiError(422, "k_too_large", f"k is at most {service.max_k} here.")
    dataset = dataset or service.default_dataset(q.loaded.entry)
    table, job = service.table(q.loaded, dataset, q.layers)
    data = service.scanned(q.loaded, dataset)
    described = {"model": q.model, "layer": q.layer, "channel": q.channel, "dataset": dataset, "source": data.as_json()}
    if table is None:
        assert job is not None
        return JSONResponse({**described, **job.as_json()}, status_code=202, headers={"Retry-After": "1"})
    found = examples.examples_for(table, q.layer, q.channel, k)
    for item in found:
        item["sample_id"] = data.sample_id(item["index"])
    return {**described, "images": table.images, "weights_used": q.loaded.variant, "examples": found}


@router.get(f"{CHANNEL}/examples/{{index}}.png", responses=binary("image/png", "The crop (or, with context, the "
                                                                              "region with the field outlined)."))
def example_crop(q: OneChannel, index: DatasetIndex, service: ChannelExamplesDep, dataset: DatasetQuery | None = None,
                 context: Annotated[bool, Query(description="a wider region, enlarged, with the field outlined")] = False,
                 ) -> Response:
    """Dataset image ``index`` as the model sees it, cropped to this channel's receptive field around its
    maximum (only images among the channel's top examples; 404 otherwise, and while computing)."""
    dataset = dataset or service.default_dataset(q.loaded.entry)
    png, (top, left, bottom, right) = service.crop_png(q.loaded, dataset, q.layers, q.row, q.channel, index, context)
    return png_response(png, {"X-ConvScope-Box": f"{top},{left},{bottom},{right}"})


@router.get(f"{CHANNEL}/feature-vis.json")
def feature_vis_status(q: OneChannel, visuals: FeatureVisDep, seed: Seed = 0) -> dict[str, Any]:
    """The state of the image optimised to excite this channel: missing, queued, running (with progress), done."""
    return visuals.status(q.loaded, q.layer, q.channel, seed)


@router.post(f"{CHANNEL}/feature-vis", status_code=202, responses={
    **json_example(VIS, 202, "Started (or already queued or running)"),
    **json_example({**VIS, "state": "done"}, 200, "Already made: nothing started")})
def feature_vis_start(q: OneChannel, response: Response, visuals: FeatureVisDep, seed: Seed = 0) -> dict[str, Any]:
    """Start optimising an image for this channel (or answer the run already made or under way)."""
    answer = visuals.start(q.loaded, q.resolved, q.channel, seed)
    if answer["state"] == "done":
        response.status_code = 200
    return answer


@router.delete(f"{CHANNEL}/feature-vis")
def feature_vis_cancel(q: OneChannel, visuals: FeatureVisDep, seed: Seed = 0) -> dict[str, Any]:
    """Cancel a queued or running optimisation (a finished one stays)."""
    return visuals.cancel(q.loaded, q.layer, q.channel, seed)


@router.get(f"{CHANNEL}/feature-vis.png", responses=binary("image/png", "The optimised picture."))
def feature_vis_png(q: OneChannel, visuals: FeatureVisDep, seed: Seed = 0) -> Response:
    """The optimised image (the model's input size, as a picture); 404 until it is made."""
    return png_response(visuals.png(q.loaded, q.layer, q.channel, seed))
