"""FastAPI dependencies as ``Annotated`` aliases: the services the lifespan made (``app.state``), and every
request parameter resolved once, here at the edge: the loaded model of a URL (with its weights query), its
layer (``LayerDep``: the module, found once), the saliency method object (``SaliencyMethodDep``) and the
range-checked class index (``TargetDep``). Services receive the resolved objects and never re-check them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from server.errors import ApiError
from server.middleware import add_response_header
from server.services.channels import ChannelExamples, FeatureVisualisations
from server.services.classroom import Classroom
from server.services.feature_maps import FeatureMaps
from server.services.images import ImageStore, UploadGate
from server.services.images.samples import SampleGallery
from server.services.live import LiveHub
from server.services.network import NetworkOverviews
from server.services.runtime import (
    ArchitectureCatalog,
    LoadedModel,
    ModelLayer,
    ModelRuntime,
    PredictionBatcher,
    WeightsDownloads,
)
from server.services.runtime.inputs import ModelInputs
from server.services.runtime.outputs import ModelOutputs
from server.services.saliency.base import SaliencyMethod
from server.services.saliency.gradcam_steps import GradCamStepsService
from server.services.saliency.methods import DEFAULT_METHOD, METHODS, get_method
from server.services.saliency.service import SaliencyMaps
from server.services.step_through import StepThrough
from server.services.work import Scheduler, WorkLimiter
from server.settings import Settings


def from_state(name: str) -> Callable[[HTTPConnection], Awaitable[Any]]:
    """A dependency that returns ``app.state.<name>``, a service the lifespan made (HTTP and WebSocket
    endpoints alike). It is ``async``: FastAPI calls it on the event loop instead of sending it to a worker
    thread (cheaper, and no request waits for a thread just to find a service)."""

    async def service(connection: HTTPConnection) -> Any:
        return getattr(connection.app.state, name)

    service.__name__ = f"app_state_{name}"
    return service


SettingsDep = Annotated[Settings, Depends(from_state("settings"))]
RuntimeDep = Annotated[ModelRuntime, Depends(from_state("runtime"))]
ImageStoreDep = Annotated[ImageStore, Depends(from_state("image_store"))]
ArchitecturesDep = Annotated[ArchitectureCatalog, Depends(from_state("architectures"))]
DownloadsDep = Annotated[WeightsDownloads, Depends(from_state("downloads"))]
LimiterDep = Annotated[WorkLimiter, Depends(from_state("limiter"))]
FeatureMapsDep = Annotated[FeatureMaps, Depends(from_state("feature_maps"))]
SaliencyMapsDep = Annotated[SaliencyMaps, Depends(from_state("saliency_maps"))]
NetworkOverviewsDep = Annotated[NetworkOverviews, Depends(from_state("network_overviews"))]
ChannelExamplesDep = Annotated[ChannelExamples, Depends(from_state("channel_examples"))]
FeatureVisDep = Annotated[FeatureVisualisations, Depends(from_state("feature_vis"))]
BatcherDep = Annotated[PredictionBatcher, Depends(from_state("batcher"))]
UploadGateDep = Annotated[UploadGate, Depends(from_state("upload_gate"))]
GradCamStepsDep = Annotated[GradCamStepsService, Depends(from_state("gradcam_steps"))]
ClassroomDep = Annotated[Classroom, Depends(from_state("classroom"))]
LiveHubDep = Annotated[LiveHub, Depends(from_state("live"))]
InputsDep = Annotated[ModelInputs, Depends(from_state("inputs"))]
OutputsDep = Annotated[ModelOutputs, Depends(from_state("outputs"))]
StepThroughDep = Annotated[StepThrough, Depends(from_state("step_through"))]
SchedulerDep = Annotated[Scheduler, Depends(from_state("scheduler"))]
SamplesDep = Annotated[SampleGallery, Depends(from_state("samples"))]
WeightsQuery = Annotated[
    Literal["auto", "trained", "untrained"],
    Query(description="auto: trained weights when present, else untrained (random, seeded)"),
]



async def get_loaded_model(model: str, request: Request, runtime: RuntimeDep,
                           weights: WeightsQuery = "auto") -> LoadedModel:
    """The model of the URL with the weights asked for; every answer then says which weights it used
    (``X-ConvScope-Weights``, on JSON and binary answers alike). A loaded model is found on the event loop;
    only a model still to be built is built in a worker thread."""
    loaded = runtime.loaded(model, weights)
    if loaded is None:
        loaded = await run_in_threadpool(runtime.load, model, weights)
    add_response_header(request.scope, "X-ConvScope-Weights", loaded.variant)
    return loaded


LoadedModelDep = Annotated[LoadedModel, Depends(get_loaded_model)]


async def get_layer(layer: str, loaded: LoadedModelDep) -> ModelLayer:
    """The ``{layer}`` of the URL, resolved once: 404 ``unknown_layer`` when the model has no such module."""
    return loaded.named_layer(layer)


LayerDep = Annotated[ModelLayer, Depends(get_layer)]
MethodQuery = Annotated[str, Query(description="a saliency method name; see /api/saliency/methods",
                                   json_schema_extra={"enum": list(METHODS)})]
LayerQuery = Annotated[str | None, Query(description="a layer name; default: the model's last conv block")]
TargetQuery = Annotated[int | None, Query(ge=0, le=65535, description="class index; default: the top-1 class")]


async def get_saliency_method(method: MethodQuery = DEFAULT_METHOD) -> SaliencyMethod:
    """The ``method`` query as the method object (422 ``unknown_method``), built once per request."""
    return get_method(method)


SaliencyMethodDep = Annotated[SaliencyMethod, Depends(get_saliency_method)]


def optional_layer(loaded: LoadedModel, layer: str | None) -> ModelLayer:
    """A ``layer`` query resolved once; no layer named: the model's Grad-CAM layer (``target_layer``)."""
    return loaded.named_layer(layer or loaded.entry.target_layer)


async def get_query_layer(loaded: LoadedModelDep, layer: LayerQuery = None) -> ModelLayer:
    """The ``layer`` query (default: the model's Grad-CAM layer), resolved once."""
    return optional_layer(loaded, layer)


QueryLayerDep = Annotated[ModelLayer, Depends(get_query_layer)]


async def get_saliency_layer(loaded: LoadedModelDep, method: SaliencyMethodDep,
                             layer: LayerQuery = None) -> ModelLayer | None:
    """The ``layer`` query of a saliency URL: resolved once for methods that use a layer, None (and not
    looked at) for those that do not."""
    return optional_layer(loaded, layer) if method.uses_layer else None


SaliencyLayerDep = Annotated[ModelLayer | None, Depends(get_saliency_layer)]


async def get_target(loaded: LoadedModelDep, target: TargetQuery = None) -> int | None:
    """The ``target`` class index, checked once against the model's classes (404 ``invalid_target``, like an
    unknown layer); None: the top-1 class."""
    if target is not None and not 0 <= target < loaded.entry.num_classes:
        raise ApiError(404, "invalid_target",
                       f"target must be a class index from 0 to {loaded.entry.num_classes - 1}; got {target}.")
    return target


TargetDep = Annotated[int | None, Depends(get_target)]


def weights_header(variant: str) -> dict[str, str]:
    """Every model-scoped answer says which weights produced it."""
    return {"X-ConvScope-Weights": variant}
