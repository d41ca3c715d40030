"""FastAPI dependencies as ``Annotated`` aliases; tests override them with ``app.dependency_overrides``.

The getters of lifespan-made services are ``async``: FastAPI then calls them on the event loop instead of
sending each one to a worker thread (cheaper, and no request waits for a thread just to find a service)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from server.responses import add_response_header
from server.services.architecture import ArchitectureCatalog
from server.services.batching import PredictionBatcher
from server.services.channel_examples import ChannelExamples
from server.services.classroom import Classroom
from server.services.conv_trace import Traces
from server.services.feature_maps import FeatureMaps
from server.services.feature_vis import FeatureVisualisations
from server.services.image_store import ImageStore
from server.services.live import LiveHub
from server.services.model_inputs import ModelInputs
from server.services.model_runtime import LoadedModel, ModelRuntime
from server.services.network_overview import NetworkOverviews
from server.services.predictions import ModelOutputs
from server.services.saliency.gradcam_steps import GradCamStepsService
from server.services.saliency.service import SaliencyMaps
from server.services.scheduler import Scheduler
from server.services.upload import UploadGate
from server.services.weights_download import WeightsDownloads
from server.services.work_limiter import WorkLimiter
from server.settings import Settings


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_runtime(request: Request) -> ModelRuntime:
    return request.app.state.runtime


async def get_image_store(request: Request) -> ImageStore:
    return request.app.state.image_store


async def get_architectures(request: Request) -> ArchitectureCatalog:
    return request.app.state.architectures


async def get_downloads(request: Request) -> WeightsDownloads:
    return request.app.state.downloads


async def get_limiter(request: Request) -> WorkLimiter:
    return request.app.state.limiter


async def get_batcher(request: Request) -> PredictionBatcher:
    return request.app.state.batcher


async def get_upload_gate(request: Request) -> UploadGate:
    return request.app.state.upload_gate


async def get_feature_maps(request: Request) -> FeatureMaps:
    """Feature maps over the app's activation cache and layer overviews (made in the lifespan)."""
    return request.app.state.feature_maps


async def get_saliency_maps(request: Request) -> SaliencyMaps:
    return request.app.state.saliency_maps


async def get_network_overviews(request: Request) -> NetworkOverviews:
    return request.app.state.network_overviews


async def get_channel_examples(request: Request) -> ChannelExamples:
    return request.app.state.channel_examples


async def get_feature_vis(request: Request) -> FeatureVisualisations:
    return request.app.state.feature_vis


async def get_gradcam_steps(request: Request) -> GradCamStepsService:
    return request.app.state.gradcam_steps


async def get_classroom(request: Request) -> Classroom:
    return request.app.state.classroom


async def get_live_hub(connection: HTTPConnection) -> LiveHub:
    """Live sessions (WebSocket endpoints get an HTTPConnection, not a Request)."""
    return connection.app.state.live


SettingsDep = Annotated[Settings, Depends(get_settings)]
RuntimeDep = Annotated[ModelRuntime, Depends(get_runtime)]
ImageStoreDep = Annotated[ImageStore, Depends(get_image_store)]
ArchitecturesDep = Annotated[ArchitectureCatalog, Depends(get_architectures)]
DownloadsDep = Annotated[WeightsDownloads, Depends(get_downloads)]
LimiterDep = Annotated[WorkLimiter, Depends(get_limiter)]
FeatureMapsDep = Annotated[FeatureMaps, Depends(get_feature_maps)]
SaliencyMapsDep = Annotated[SaliencyMaps, Depends(get_saliency_maps)]
NetworkOverviewsDep = Annotated[NetworkOverviews, Depends(get_network_overviews)]
ChannelExamplesDep = Annotated[ChannelExamples, Depends(get_channel_examples)]
FeatureVisDep = Annotated[FeatureVisualisations, Depends(get_feature_vis)]
BatcherDep = Annotated[PredictionBatcher, Depends(get_batcher)]
UploadGateDep = Annotated[UploadGate, Depends(get_upload_gate)]
GradCamStepsDep = Annotated[GradCamStepsService, Depends(get_gradcam_steps)]
ClassroomDep = Annotated[Classroom, Depends(get_classroom)]
LiveHubDep = Annotated[LiveHub, Depends(get_live_hub)]
WeightsQuery = Annotated[
    Literal["auto", "trained", "untrained"],
    Query(description="auto: trained weights when present, else untrained (random, seeded)"),
]


async def get_inputs(request: Request) -> ModelInputs:
    return request.app.state.inputs


async def get_outputs(request: Request) -> ModelOutputs:
    return request.app.state.outputs


async def get_traces(request: Request) -> Traces:
    return request.app.state.traces


async def get_scheduler(request: Request) -> Scheduler:
    return request.app.state.scheduler


InputsDep = Annotated[ModelInputs, Depends(get_inputs)]
OutputsDep = Annotated[ModelOutputs, Depends(get_outputs)]
TracesDep = Annotated[Traces, Depends(get_traces)]
SchedulerDep = Annotated[Scheduler, Depends(get_scheduler)]


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
