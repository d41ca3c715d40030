"""FastAPI dependencies as ``Annotated`` aliases: the services the lifespan made (``app.state``), and every
request parameter resolved once, here at the edge: the loaded model of a URL (with its weights query), its
layer (``LayerDep``: the module, found once), the saliency method object (``SaliencyMethodDep``) and the
range-checked class index (``TargetDep``). Services receive the resolved objects and never re-check them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, Header, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from server.errors import ApiError
from server.middleware import add_response_header
from server.services.channels import ChannelExamples, FeatureVisualisations
from server.services.classroom import Classroom
from server.services.experiments import adversarial, params
from server.services.experiments.ablation import MAX_FACTOR, MODES, AblationSpec
from server.services.experiments.service import Experiments
from server.services.feature_maps import FeatureMaps
from server.services.image_folders import ImageFolders
from server.services.images import ImageStore, UploadGate
from server.services.images.samples import SampleGallery
from server.services.live import LiveHub
from server.services.model_uploads import ModelUploads
from server.services.network import NetworkOverviews
from server.services.quotas import UploadQuota
from server.services.runtime import (
    ArchitectureCatalog,
    LoadedModel,
    ModelLayer,
    ModelRuntime,
    PredictionBatcher,
    WeightsDownloads,
)
from server.services.runtime.inputs import ModelInputs
from server.services.runtime.model_runtime import WEIGHTS_PATTERN
from server.services.runtime.outputs import ModelOutputs
from server.services.saliency.base import SaliencyMethod
from server.services.saliency.gradcam_steps import GradCamStepsService
from server.services.saliency.layer_choice import saliency_layer
from server.services.saliency.methods import DEFAULT_METHOD, METHODS, get_method
from server.services.saliency.service import SaliencyKey, SaliencyMaps, make_key
from server.services.step_through import StepThrough
from server.services.training import TrainingRuns
from server.services.trust import TrustChecks
from server.services.trust.sanity import SanityKey
from server.services.work import Scheduler, WorkLimiter
from server.services.work.clients import client_address
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
ImageFoldersDep = Annotated[ImageFolders, Depends(from_state("image_folders"))]
FeatureVisDep = Annotated[FeatureVisualisations, Depends(from_state("feature_vis"))]
BatcherDep = Annotated[PredictionBatcher, Depends(from_state("batcher"))]
UploadGateDep = Annotated[UploadGate, Depends(from_state("upload_gate"))]
GradCamStepsDep = Annotated[GradCamStepsService, Depends(from_state("gradcam_steps"))]
ClassroomDep = Annotated[Classroom, Depends(from_state("classroom"))]
LiveHubDep = Annotated[LiveHub, Depends(from_state("live"))]
InputsDep = Annotated[ModelInputs, Depends(from_state("inputs"))]
OutputsDep = Annotated[ModelOutputs, Depends(from_state("outputs"))]
StepThroughDep = Annotated[StepThrough, Depends(from_state("step_through"))]
ExperimentsDep = Annotated[Experiments, Depends(from_state("experiments"))]
SchedulerDep = Annotated[Scheduler, Depends(from_state("scheduler"))]
SamplesDep = Annotated[SampleGallery, Depends(from_state("samples"))]
UploadQuotaDep = Annotated[UploadQuota, Depends(from_state("upload_quota"))]


ModelUploadsDep = Annotated[ModelUploads, Depends(from_state("model_uploads"))]
TrainingRunsDep = Annotated[TrainingRuns, Depends(from_state("training"))]


ClientAddressDep = Annotated[str, Depends(client_address)]


async def get_last_event_id(last_event_id: Annotated[str | None, Header(
        max_length=20, description="the id of the last event a reconnecting EventSource saw")] = None) -> int | None:
    """The event number a reconnecting stream resumes after; anything but ASCII digits is no number (the stream
    starts again from the whole state). ``str.isdigit`` alone lets "²" through, which ``int`` refuses."""
    text = (last_event_id or "").strip()
    return int(text) if text.isascii() and text.isdigit() else None


LastEventIdDep = Annotated[int | None, Depends(get_last_event_id)]


TrustDep = Annotated[TrustChecks, Depends(from_state("trust"))]
WeightsQuery = Annotated[str, Query(
    pattern=WEIGHTS_PATTERN, max_length=20,
    description="auto: trained weights when present, else untrained (random, seeded); trained; untrained; or "
                "a training run's checkpoint, epoch-<n> or step-<n> (models run-<id>)")]



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
LayerQuery = Annotated[str | None, Query(description="a layer name; default: the model's default_layer "
                                                     "(see /api/models/{model})")]
TargetQuery = Annotated[int | None, Query(ge=0, le=65535, description="class index; default: the top-1 class")]


async def get_saliency_method(method: MethodQuery = DEFAULT_METHOD) -> SaliencyMethod:
    """The ``method`` query as the method object (422 ``unknown_method``), built once per request."""
    return get_method(method)


SaliencyMethodDep = Annotated[SaliencyMethod, Depends(get_saliency_method)]


async def get_query_layer(loaded: LoadedModelDep, layer: LayerQuery = None) -> ModelLayer:
    """The ``layer`` query (default: the model's Grad-CAM layer), resolved once."""
    return saliency_layer(loaded, layer)


QueryLayerDep = Annotated[ModelLayer, Depends(get_query_layer)]


async def get_saliency_layer(loaded: LoadedModelDep, method: SaliencyMethodDep,
                             layer: LayerQuery = None) -> ModelLayer | None:
    """The ``layer`` query of a saliency URL: resolved once for methods that use a layer, None (and not
    looked at) for those that do not."""
    return saliency_layer(loaded, layer) if method.uses_layer else None


SaliencyLayerDep = Annotated[ModelLayer | None, Depends(get_saliency_layer)]


async def get_target(loaded: LoadedModelDep, target: TargetQuery = None) -> int | None:
    """The ``target`` class index, checked once against the model's classes (``LoadedModel.class_index``: 404, like an
    unknown layer); None: the top-1 class."""
    return loaded.class_index(target)


TargetDep = Annotated[int | None, Depends(get_target)]


def weights_header(variant: str) -> dict[str, str]:
    """Every model-scoped answer says which weights produced it."""
    return {"X-ConvScope-Weights": variant}


# --- experiments (issue 22): each URL's parameters resolved and checked once, here ---------------------------
@dataclass(frozen=True)
class Ablation:
    loaded: LoadedModel
    spec: AblationSpec


def get_ablation(
    loaded: LoadedModelDep,
    maps: FeatureMapsDep,
    layer: Annotated[str | None, Query(max_length=300, description="the edited layer; default: the Grad-CAM layer")] = None,
    channels: Annotated[str, Query(max_length=params.MAX_CHANNEL_TEXT, pattern=r"^[0-9]{1,5}(,[0-9]{1,5})*$",
                                   description="comma-separated channel indices of the layer's output, e.g. 3,5; "
                                               "an index the layer lacks is a 404")] = "0",
    mode: Annotated[Literal["zero", "mean", "scale"], Query(description="zero; the channel's mean over the image; "
                                                                      "or scaled by factor")] = "zero",
    factor: Annotated[float, Query(ge=0.0, le=MAX_FACTOR, description="mode=scale: the factor, 0 to 2")] = 1.0,
    invert: Annotated[bool, Query(description="edit every channel except the listed ones")] = False,
) -> Ablation:
    assert mode in MODES
    edited = saliency_layer(loaded, layer)  # 404 unknown_layer; default: the Grad-CAM layer
    row = params.layer_row(maps.layers(loaded), loaded, edited.name)
    return Ablation(loaded, params.ablation_spec(row, edited, channels, mode, factor, invert))


AblationDep = Annotated[Ablation, Depends(get_ablation)]


async def get_cam_layer(loaded: LoadedModelDep, cam_layer: Annotated[str | None, Query(
        max_length=300, description="the Grad-CAM layer; default: the model's")] = None) -> ModelLayer:
    """An ablation Grad-CAM's ``cam_layer`` (default: the model's Grad-CAM layer), resolved once."""
    return saliency_layer(loaded, cam_layer)


CamLayerDep = Annotated[ModelLayer, Depends(get_cam_layer)]


def get_attack(
    loaded: LoadedModelDep,
    settings: SettingsDep,
    attack: Annotated[Literal["fgsm", "pgd"], Query(description="FGSM (one step) or PGD (L∞, several steps)")] = "fgsm",
    epsilon: Annotated[int, Query(ge=0, le=adversarial.MAX_EPSILON, description="L∞ bound in steps of 1/255")] = 4,
    steps: Annotated[int, Query(ge=1, le=adversarial.MAX_STEPS, description="PGD's steps")] = 10,
    step_size: Annotated[int, Query(ge=1, le=adversarial.MAX_EPSILON, description="PGD's step, in 1/255")] = 1,
    target: Annotated[int | None, Query(ge=0, le=65535, description="targeted: the class to reach; "
                                                                     "absent: untargeted")] = None,
) -> adversarial.AttackSpec:
    if steps > settings.adversarial_max_steps:
        raise ApiError(422, "too_many_steps", f"steps: at most {settings.adversarial_max_steps} on this server.")
    loaded.class_index(target)
    if attack == "fgsm":
        steps, step_size = 1, epsilon
    return adversarial.AttackSpec(attack, epsilon, steps, step_size, target)


AttackDep = Annotated[adversarial.AttackSpec, Depends(get_attack)]


async def get_compared_model(
    loaded: LoadedModelDep,
    runtime: RuntimeDep,
    with_model: Annotated[str, Query(min_length=1, max_length=200, description="the second model's id")],
    with_weights: Annotated[str, Query(pattern=WEIGHTS_PATTERN, max_length=20,
                                       description="the second model's weights (as weights)")] = "auto",
) -> LoadedModel:
    other = runtime.loaded(with_model, with_weights) or await run_in_threadpool(runtime.load, with_model, with_weights)
    params.check_same_input(loaded, other)
    return other


ComparedModelDep = Annotated[LoadedModel, Depends(get_compared_model)]



# --- "Can we trust this map?" (issue 23): each query parameter resolved once -----------------------------
_METHOD_NAMES = "(" + "|".join(METHODS) + ")"
SanityMethodsQuery = Annotated[str, Query(
    max_length=200, pattern=f"^{_METHOD_NAMES}(,{_METHOD_NAMES}){{0,5}}$",
    description="comma-separated saliency method names (see /api/saliency/methods), at most 6 (the server's "
                "sanity_max_methods may allow fewer)", examples=["gradcam,gradient"])]
TrustSeedQuery = Annotated[int, Query(ge=0, le=9999, description="random seed (re-initialisation, random order, ties)")]


async def sanity_key(image_id: str, loaded: LoadedModelDep, settings: SettingsDep,
                     target: TargetDep, methods: SanityMethodsQuery = "gradcam,gradient",
                     seed: TrustSeedQuery = 0) -> tuple[LoadedModel, SanityKey]:
    """The loaded model and the sanity check's key: methods checked (422 unknown_method), de-duplicated in
    their order, at most ``sanity_max_methods``; the class by TargetDep."""
    names = tuple(dict.fromkeys(name.strip() for name in methods.split(",") if name.strip()))
    if not names:
        raise ApiError(422, "no_methods", "methods names at least one saliency method, e.g. gradcam,gradient.")
    if len(names) > settings.sanity_max_methods:
        raise ApiError(422, "too_many_methods", f"At most {settings.sanity_max_methods} methods per sanity check.")
    saliency = tuple(get_method(name) for name in names)  # built once; the job runs these objects
    return loaded, SanityKey(loaded.entry.id, loaded.variant, image_id, names, target, seed, saliency)


SanityKeyDep = Annotated[tuple[LoadedModel, SanityKey], Depends(sanity_key)]


@dataclass(frozen=True)
class DeletionRequest:
    """deletion.json's query, resolved: the model, the map's key (method, default layer, class), k, baseline."""

    loaded: LoadedModel
    key: SaliencyKey
    steps: int
    baseline: str
    seed: int


async def deletion_request(
    image_id: str, loaded: LoadedModelDep, method: SaliencyMethodDep, target: TargetDep,
    steps: Annotated[int, Query(ge=2, le=50, description="k: pixels change in k equal steps")] = 20,
    baseline: Annotated[Literal["blur", "mean"], Query(
        description="blur: the image blurred; mean: the dataset's mean colour")] = "blur",
    seed: TrustSeedQuery = 0,
) -> DeletionRequest:
    layer = saliency_layer(loaded, None) if method.uses_layer else None  # the map at the model's default layer
    key = make_key(loaded, image_id, method, layer, target)
    return DeletionRequest(loaded, key, steps, baseline, seed)


DeletionRequestDep = Annotated[DeletionRequest, Depends(deletion_request)]
