"""FastAPI dependencies as ``Annotated`` aliases; tests override them with ``app.dependency_overrides``."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, Query, Request
from starlette.requests import HTTPConnection

from server.services.architecture import ArchitectureCatalog
from server.services.batching import PredictionBatcher
from server.services.classroom import Classroom
from server.services.feature_maps import FeatureMaps
from server.services.image_store import ImageStore
from server.services.live import LiveHub
from server.services.model_runtime import ModelRuntime
from server.services.saliency.service import SaliencyMaps
from server.services.upload import UploadGate
from server.services.weights_download import WeightsDownloads
from server.services.work_limiter import WorkLimiter
from server.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_runtime(request: Request) -> ModelRuntime:
    return request.app.state.runtime


def get_image_store(request: Request) -> ImageStore:
    return request.app.state.image_store


def get_architectures(request: Request) -> ArchitectureCatalog:
    return request.app.state.architectures


def get_downloads(request: Request) -> WeightsDownloads:
    return request.app.state.downloads


def get_limiter(request: Request) -> WorkLimiter:
    return request.app.state.limiter


def get_batcher(request: Request) -> PredictionBatcher:
    return request.app.state.batcher


def get_upload_gate(request: Request) -> UploadGate:
    return request.app.state.upload_gate


def get_feature_maps(request: Request) -> FeatureMaps:
    """Feature maps over the app's activation cache and layer overviews (made in the lifespan)."""
    state = request.app.state
    return FeatureMaps(state.activations, state.layer_overviews, state.architectures, state.image_store,
                       state.limiter.admit)


def get_saliency_maps(request: Request) -> SaliencyMaps:
    return request.app.state.saliency_maps


def get_classroom(request: Request) -> Classroom:
    return request.app.state.classroom
def get_live_hub(connection: HTTPConnection) -> LiveHub:
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
BatcherDep = Annotated[PredictionBatcher, Depends(get_batcher)]
UploadGateDep = Annotated[UploadGate, Depends(get_upload_gate)]
ClassroomDep = Annotated[Classroom, Depends(get_classroom)]
LiveHubDep = Annotated[LiveHub, Depends(get_live_hub)]
WeightsQuery = Annotated[
    Literal["auto", "trained", "untrained"],
    Query(description="auto: trained weights when present, else untrained (random, seeded)"),
]


def weights_header(variant: str) -> dict[str, str]:
    """Every model-scoped answer says which weights produced it."""
    return {"X-ConvScope-Weights": variant}
