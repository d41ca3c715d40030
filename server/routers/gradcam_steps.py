"""Grad-CAM taken apart: the α_k weights, the top A^k maps, their weighted sum and its ReLU (JSON + .npy)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from server.deps import GradCamStepsDep, LoadedModelDep, QueryLayerDep, TargetDep
from server.responses import npy_response
from server.services.saliency.gradcam_steps import MAX_TOP

router = APIRouter(prefix="/api", tags=["saliency"])

STEPS = "/models/{model}/images/{image_id}/saliency/gradcam-steps"
TopQuery = Annotated[int, Query(ge=1, le=MAX_TOP, description="how many A^k maps to send (largest contributions)")]


@router.get(STEPS + ".json")
def gradcam_steps(image_id: str, loaded: LoadedModelDep, service: GradCamStepsDep, layer: QueryLayerDep,
                  target: TargetDep, top: TopQuery = 8) -> Response:
    """Every step of Grad-CAM for one class at one layer, with the URL of the maps (.npy)."""
    key = service.key(loaded, image_id, layer, target)
    steps = service.steps(loaded, key)
    answer: dict[str, Any] = steps.describe(top)
    query = urlencode({"layer": steps.layer, "target": steps.target, "top": top, "weights": loaded.variant})
    base = f"/api/models/{quote(loaded.entry.id, safe='')}/images/{quote(image_id, safe='')}/saliency"
    answer["maps_url"] = f"{base}/gradcam-steps.npy?{query}"
    answer["raw_url"] = f"{base}/raw.npy?{urlencode({'method': 'gradcam', 'layer': steps.layer, 'target': steps.target, 'weights': loaded.variant})}"
    answer["maps"] = "float32 (top + 2)×h×w: the top channels' A^k in the order of 'top', then Σ_k α_k A^k, then its ReLU"
    return JSONResponse(answer)


@router.get(STEPS + ".npy")
def gradcam_steps_maps(image_id: str, loaded: LoadedModelDep, service: GradCamStepsDep, layer: QueryLayerDep,
                       target: TargetDep, top: TopQuery = 8) -> Response:
    """float32 (top + 2)×h×w: the top A^k maps, the weighted sum Σ_k α_k A^k, and ReLU of it."""
    steps = service.steps(loaded, service.key(loaded, image_id, layer, target))
    return npy_response(steps.stack(top))

