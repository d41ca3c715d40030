"""FastAPI dependencies as ``Annotated`` aliases: the services the lifespan made (``app.state``), the loaded
model of a URL, and the weights query."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from server.middleware import add_response_header
from server.services.channels import ChannelExamples, FeatureVisualisations
from server.services.classroom import Classroom
from server.services.feature_maps import FeatureMaps
from server.services.images import ImageStore, UploadGate
from server.services.live import LiveHub
from server.services.network import NetworkOverviews
from server.services.runtime import ArchitectureCatalog, LoadedModel, ModelRuntime, PredictionBatcher, WeightsDownloads
from server.services.runtime.inputs import ModelInputs
from server.services.runtime.outputs import ModelOutputs
from server.services.saliency.gradcam_steps import GradCamStepsService
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


def weights_header(variant: str) -> dict[str, str]:
    """Every model-scoped answer says which weights produced it."""
    return {"X-ConvScope-Weights": variant}
