"""Experiments on one image: ablation, the occlusion probe, adversarial examples, two models compared."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from server.deps import (
    AblationDep,
    AttackDep,
    CamLayerDep,
    ComparedModelDep,
    ExperimentsDep,
    InputsDep,
    LoadedModelDep,
    SettingsDep,
    TargetDep,
)
from server.errors import ApiError
from server.openapi import binary
from server.responses import npy_response, png_response
from server.services.experiments import answers, params
from server.services.experiments.occlusion_probe import Patch
from server.services.rendering.colormaps import COLORMAPS
from server.services.runtime.model_runtime import ModelLayer
from server.services.saliency.overlay import DEFAULT_COLORMAP, check_colormap

router = APIRouter(prefix="/api", tags=["experiments"])
IMAGE = "/models/{model}/images/{image_id}"
MAX_SIDE = 4096

Colormap = Annotated[str, Query(description="colour map name", json_schema_extra={"enum": list(COLORMAPS)})]
Opacity = Annotated[float, Query(ge=0.0, le=1.0, description="0: the input only, 1: the map only")]


@router.get(IMAGE + "/ablation.json")
def ablation_json(image_id: str, ablation: AblationDep, experiments: ExperimentsDep) -> dict[str, Any]:
    """Channels of a layer edited: the new top-5 beside the unedited one, each class's change, and how far
    every later layer's output moved (relative L2). ``gradcam`` names the edited model's Grad-CAM URLs."""
    outcome, baseline = experiments.ablation(ablation.loaded, image_id, ablation.spec)
    split = experiments.split(ablation.loaded, ablation.spec.layer)
    return answers.ablation(ablation.loaded, image_id, ablation.spec, outcome, baseline, split)


@router.get(IMAGE + "/ablation/gradcam.npy", responses=binary("application/octet-stream", "float32 H×W in [0, 1]"))
def ablation_gradcam_npy(image_id: str, ablation: AblationDep, experiments: ExperimentsDep, target: TargetDep,
                         cam_layer: CamLayerDep) -> Response:
    """Grad-CAM of the model with the channels edited (float32 H×W in [0, 1]; range in X-ConvScope-Range)."""
    cam = _cam(image_id, ablation, experiments, target, cam_layer)
    return npy_response(cam.values, answers.cam_headers(cam))


@router.get(IMAGE + "/ablation/gradcam.png", responses=binary("image/png", "the map over the input picture"))
def ablation_gradcam_png(image_id: str, ablation: AblationDep, experiments: ExperimentsDep, inputs: InputsDep,
                         target: TargetDep, cam_layer: CamLayerDep,
                         colormap: Colormap = DEFAULT_COLORMAP, opacity: Opacity = 0.5) -> Response:
    """Grad-CAM of the model with the channels edited, over the input picture."""
    check_colormap(colormap)
    cam = _cam(image_id, ablation, experiments, target, cam_layer)
    png = answers.overlay(ablation.loaded, inputs, image_id, cam.values, colormap, opacity)
    return png_response(png, answers.cam_headers(cam))


def _cam(image_id: str, ablation: Any, experiments: Any, target: int | None, cam_layer: ModelLayer) -> Any:
    return experiments.ablation_gradcam(ablation.loaded, image_id, ablation.spec, cam_layer.name, target)


class PatchBody(BaseModel):
    y: int = Field(ge=-MAX_SIDE, le=MAX_SIDE, description="top edge in model-input pixels (clipped)")
    x: int = Field(ge=-MAX_SIDE, le=MAX_SIDE, description="left edge in model-input pixels (clipped)")
    size: int = Field(ge=1, le=MAX_SIDE, description="side in model-input pixels, at most the input's")
    fill: str = Field("grey", pattern="^(grey|blur|noise)$", description="grey, blur or noise")


MAX_PROBE_PATCHES = 64  # one probe update (Settings.max_probe_patches may lower it); the page sends ≤ 16
MAX_MAP_PATCHES = 256  # the visited positions the page turns into a map (probe-panel.js MAP_LIMIT)


class ProbeBody(BaseModel):
    patches: list[PatchBody] = Field(min_length=1, max_length=MAX_PROBE_PATCHES)
    classes: list[Annotated[int, Field(ge=0, le=65535)]] | None = Field(None, max_length=32)


class ProbeMapBody(BaseModel):
    patches: list[PatchBody] = Field(min_length=1, max_length=MAX_MAP_PATCHES)
    target: int | None = Field(None, ge=0, le=65535, description="the class; default: the top-1")
    colormap: str = Field(DEFAULT_COLORMAP, json_schema_extra={"enum": list(COLORMAPS)}, description="colour map name")


def _patches(loaded: Any, limit: int, body: ProbeBody | ProbeMapBody) -> list[Patch]:
    if len(body.patches) > limit:
        raise ApiError(422, "too_many_patches", f"patches: at most {limit} per request.")
    return params.check_patches(loaded, [Patch(p.y, p.x, p.size, p.fill) for p in body.patches])


@router.post(IMAGE + "/occlusion-probe")
def occlusion_probe(image_id: str, body: ProbeBody, loaded: LoadedModelDep, experiments: ExperimentsDep,
                    settings: SettingsDep) -> dict[str, Any]:
    """The image with each patch pasted, classified in one batched pass: top-5 (and the listed classes) per
    patch, in order, with the patch as clipped."""
    patches = _patches(loaded, min(settings.max_probe_patches, MAX_PROBE_PATCHES), body)
    classes = params.check_classes(loaded, body.classes)
    result = experiments.probe(loaded, image_id, patches)
    return answers.probe(loaded, patches, result, classes)


@router.post(IMAGE + "/occlusion-probe/map.png", responses=binary("image/png", "the map over the input picture"))
def occlusion_probe_map(image_id: str, body: ProbeMapBody, loaded: LoadedModelDep, experiments: ExperimentsDep,
                        inputs: InputsDep) -> Response:
    """The visited positions as an occlusion map: each pixel's mean drop of the class's probability over the
    patches that covered it (0 to the largest drop, in X-ConvScope-Range; X-ConvScope-Target the class)."""
    check_colormap(body.colormap)
    patches = _patches(loaded, MAX_MAP_PATCHES, body)
    target = loaded.class_index(body.target)
    result = experiments.probe(loaded, image_id, patches)
    values, headers = answers.probe_map(loaded, patches, result, target)
    return png_response(answers.overlay(loaded, inputs, image_id, values, body.colormap, 0.6), headers)


MinFlip = Annotated[bool, Query(description="also search the smallest flipping ε in this request (up to 16 "
                                             "attacks; cached). Default: only when already known — "
                                             "urls.min_flip asks for it on its own")]


@router.get(IMAGE + "/adversarial.json")
def adversarial_json(image_id: str, loaded: LoadedModelDep, spec: AttackDep, experiments: ExperimentsDep,
                     min_flip: MinFlip = False) -> dict[str, Any]:
    """The prediction before and after the attack, per layer how far its output moved, the perturbation's
    size, and the smallest ε that flips the top-1 when it is known (``min_flip_known``; ``urls.min_flip``
    searches it, ``min_flip=true`` in this request). The search is not part of the attack's cost."""
    result = experiments.attack(loaded, image_id, spec)
    if min_flip:
        known, epsilon = True, experiments.min_flip_epsilon(loaded, image_id, spec)
    else:
        known, epsilon = experiments.cached_min_flip(loaded, image_id, spec)
    return answers.attack(loaded, image_id, spec, result, known, epsilon)


@router.get(IMAGE + "/adversarial/min-flip.json")
def adversarial_min_flip(image_id: str, loaded: LoadedModelDep, spec: AttackDep, experiments: ExperimentsDep) -> dict[str, Any]:
    """The smallest ε (1…16, in 1/255) at which this attack flips the top-1; null when none does."""
    return {"min_flip_epsilon": experiments.min_flip_epsilon(loaded, image_id, spec), "attack": spec.attack,
            "weights_used": loaded.variant}


@router.get(IMAGE + "/adversarial.png", responses=binary("image/png", "the perturbed model input"))
def adversarial_png(image_id: str, loaded: LoadedModelDep, spec: AttackDep, experiments: ExperimentsDep) -> Response:
    """The perturbed model input as a picture (8-bit for display; the answers use the unrounded values)."""
    return png_response(answers.pixels_png(experiments.attack(loaded, image_id, spec).perturbed))


@router.get(IMAGE + "/adversarial/perturbation.npy", responses=binary("application/octet-stream", "float32 C×H×W"))
def adversarial_perturbation(image_id: str, loaded: LoadedModelDep, spec: AttackDep, experiments: ExperimentsDep) -> Response:
    """The perturbation at model-input size on a 0–255 scale (float32 C×H×W)."""
    result = experiments.attack(loaded, image_id, spec)
    return npy_response(((result.perturbed - result.pixels) * 255.0).numpy().astype("float32"))


@router.get(IMAGE + "/adversarial/perturbation.png", responses=binary("image/png", "the perturbation, amplified"))
def adversarial_perturbation_png(image_id: str, loaded: LoadedModelDep, spec: AttackDep,
                                 experiments: ExperimentsDep) -> Response:
    """The perturbation amplified so that ±ε spans the picture: grey is 0; X-ConvScope-Amplification says by
    how much."""
    result = experiments.attack(loaded, image_id, spec)
    png, gain = answers.perturbation_png(result, spec)
    return png_response(png, {"X-ConvScope-Amplification": f"{gain:g}"})


@router.get(IMAGE + "/compare.json")
def compare_json(image_id: str, loaded: LoadedModelDep, other: ComparedModelDep,
                 experiments: ExperimentsDep) -> dict[str, Any]:
    """Per matched layer (by name when the architectures match, else by fraction of depth) the cosine
    similarity of the two models' outputs for this image."""
    by_name, layers = experiments.compare(loaded, other, image_id)
    return {
        "model": loaded.entry.id, "weights_used": loaded.variant,
        "with_model": other.entry.id, "with_weights_used": other.variant,
        "matched_by": "name" if by_name else "depth",
        "layers": [{"name": m.name, "with_name": m.with_name, "cosine": m.cosine, "shape": list(m.shape),
                    "with_shape": list(m.with_shape)} for m in layers],
    }

