"""Can we trust this map? Model randomisation (sanity.json, 202 while computing) and deletion/insertion
curves (deletion.json) for a stored image, with the pictures the page plays them with."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import JSONResponse

from server.deps import DeletionRequestDep, SanityKeyDep, TrustDep
from server.errors import ApiError
from server.openapi import binary, json_example
from server.responses import npy_response, png_response
from server.services.rendering.colormaps import COLORMAPS, apply_colormap
from server.services.saliency.methods import METHODS
from server.services.saliency.overlay import DEFAULT_COLORMAP, check_colormap
from server.services.trust.sanity import SanityKey, SanityResult, strip_png

router = APIRouter(prefix="/api", tags=["trust"])
BASE = "/models/{model}/images/{image_id}/saliency"
StripMethod = Annotated[str, Query(description="one of the methods the check ran",
                                   json_schema_extra={"enum": list(METHODS)})]
ColormapQuery = Annotated[str, Query(description="colour map name", json_schema_extra={"enum": list(COLORMAPS)})]
Step = Annotated[int, Path(ge=0, le=64, description="0: the original model; i: after i randomisation steps")]

SANITY = {
    "model": "lenet5", "weights_used": "trained", "target": {"index": 7, "label": "7"}, "seed": 0,
    "methods": [{"name": "gradcam", "title": "Grad-CAM"}],
    "steps": [{"step": 1, "randomised": ["classifier.5"], "label": "classifier.5",
               "scores": {"gradcam": {"spearman": 0.41, "ssim": 0.22, "flat": False}}}],
    "checks": {"gradcam": {"passes": True, "half_step": 3, "spearman_at_half": 0.2, "threshold": 0.5,
                           "explanation": "…"}},
    "strips": {"gradcam": "/api/models/lenet5/images/…/saliency/sanity/strip.png?…"},
}
COMPUTING = {"state": "running", "progress": {"done": 3, "total": 12}, "steps": 5, "step": "classifier.3",
             "method": "gradcam"}
DELETION = {"method": {"name": "gradcam", "title": "Grad-CAM"}, "target": {"index": 7, "label": "7", "probability": 0.99},
            "steps": 20, "baseline": "blur", "fractions": [0.0, 0.05, "…", 1.0], "deletion": [0.99, "…"],
            "insertion": [0.1, "…"], "deletion_auc": 0.21, "insertion_auc": 0.74,
            "random": {"deletion_auc": 0.55, "insertion_auc": 0.52}}


def _query(key: SanityKey, **extra: Any) -> str:
    params: dict[str, Any] = {"methods": ",".join(key.methods), "seed": key.seed, "weights": key.variant}
    if key.target is not None:
        params["target"] = key.target
    params.update(extra)
    return urlencode(params)


def _prefix(model: str, image_id: str) -> str:
    return f"/api/models/{quote(model, safe='')}/images/{quote(image_id, safe='')}/saliency"


def _sanity_json(key: SanityKey, result: SanityResult) -> dict[str, Any]:
    prefix = _prefix(key.model, key.image_id)
    return {
        "model": key.model,
        "weights_used": key.variant,
        "image_id": key.image_id,
        "target": {"index": result.target, "label": result.label},
        "seed": key.seed,
        "methods": [{"name": m.name, "title": m.title} for m in key.saliency],
        "steps": [{"step": i, "randomised": list(unit.names), "label": unit.label, "scores": scores}
                  for i, (unit, scores) in enumerate(zip(result.units, result.scores, strict=True), start=1)],
        "checks": result.checks,
        "rule": "A method fails when the |Spearman| rank correlation of its map with the original map is still "
                "above 0.5 after the top half of the steps (rounded up) are randomised.",
        "strips": {m: f"{prefix}/sanity/strip.png?{_query(key, method=m)}" for m in key.methods},
        "maps": {m: [f"{prefix}/sanity/{i}.npy?{_query(key, method=m)}" for i in range(len(result.units) + 1)]
                 for m in key.methods},
    }


@router.get(BASE + "/sanity.json", responses={
    **json_example(SANITY), **json_example(COMPUTING, 202, "Being computed: poll again after Retry-After seconds")})
def sanity(q: SanityKeyDep, trust: TrustDep) -> Any:
    """Cascading model randomisation: each method's map after each step of re-initialising the model's
    blocks (or layers) from the output back to the input, on a copy of the weights, scored against the
    original map (|Spearman| and SSIM). Starts a background job on first ask; 202 with progress until done."""
    loaded, key = q
    result, job = trust.sanity.start(loaded, key)
    if result is None:
        assert job is not None
        return JSONResponse(job.as_json(), status_code=202, headers={"Retry-After": "1"})
    return _sanity_json(key, result)


@router.delete(BASE + "/sanity.json", responses=json_example({"state": "cancelled", "progress": {"done": 3, "total": 12}}))
def sanity_cancel(q: SanityKeyDep, trust: TrustDep) -> dict[str, Any]:
    """Cancel a queued or running sanity check (a finished one stays)."""
    return trust.sanity.cancel(q[1])


def _maps(q: tuple[Any, SanityKey], trust: Any, method: str) -> Any:
    key = q[1]
    if method not in key.methods:
        raise ApiError(404, "method_not_checked", f"{method!r} is not among this check's methods ({', '.join(key.methods)}).")
    return trust.sanity.finished(key).maps[method]


@router.get(BASE + "/sanity/strip.png", responses=binary("image/png", "The maps side by side, original first."))
def sanity_strip(q: SanityKeyDep, trust: TrustDep, method: StripMethod,
                 colormap: ColormapQuery = DEFAULT_COLORMAP) -> Response:
    """One method's maps, the original model's then one per randomisation step, in a row (2 px gaps)."""
    check_colormap(colormap)
    maps = _maps(q, trust, method)
    return png_response(strip_png(maps, lambda values: apply_colormap(values, colormap)))


@router.get(BASE + "/sanity/{step}.npy", responses=binary("application/octet-stream", "float32 H×W in [0, 1]."))
def sanity_map(q: SanityKeyDep, trust: TrustDep, step: Step, method: StripMethod) -> Response:
    """One method's display map (input resolution, [0, 1]) after ``step`` randomisation steps."""
    maps = _maps(q, trust, method)
    if step >= maps.shape[0]:
        raise ApiError(404, "unknown_step", f"This check has steps 0 to {maps.shape[0] - 1}.")
    return npy_response(maps[step])


@router.get(BASE + "/deletion.json", responses=json_example(DELETION))
def deletion(q: DeletionRequestDep, trust: TrustDep) -> dict[str, Any]:
    """Deletion and insertion curves of the class probability for the method's pixel order, their AUCs, and
    a seeded random order's AUCs (the playback's order and baseline are ``urls``)."""
    answer = trust.deletion.compute(q.loaded, q.key, q.steps, q.baseline, q.seed)
    prefix = _prefix(q.key.model, q.key.image_id)
    params = {"method": q.key.method, "seed": q.seed, "weights": q.key.variant}
    if q.key.target is not None:
        params["target"] = q.key.target
    return {
        "model": q.key.model,
        "weights_used": q.key.variant,
        "image_id": q.key.image_id,
        "method": {"name": q.key.method, "title": METHODS[q.key.method].title},
        **answer,
        "urls": {
            "order": f"{prefix}/deletion/order.npy?{urlencode(params)}",
            "random_order": f"{prefix}/deletion/order.npy?{urlencode({**params, 'random': 'true'})}",
            "baseline": f"{prefix}/deletion/baseline.png?{urlencode({**params, 'baseline': q.baseline})}",
            "input": f"/api/models/{quote(q.key.model, safe='')}/images/{quote(q.key.image_id, safe='')}/input.png?"
                     f"weights={q.key.variant}",
        },
    }


@router.get(BASE + "/deletion/order.npy", responses=binary("application/octet-stream",
                                                          "float32 N: pixel indices (row-major), most important first."))
def deletion_order(q: DeletionRequestDep, trust: TrustDep,
                   random: Annotated[bool, Query(description="the seeded random order instead")] = False) -> Response:
    """The pixel order deletion.json used (indices into the H×W raster, exact in float32)."""
    return npy_response(trust.deletion.order(q.loaded, q.key, q.seed, random))


@router.get(BASE + "/deletion/baseline.png", responses=binary("image/png", "The baseline image."))
def deletion_baseline(q: DeletionRequestDep, trust: TrustDep) -> Response:
    """What deleted pixels become (blur or the mean colour), as a picture of the model's input size."""
    return png_response(trust.deletion.baseline_png(q.loaded, q.key.image_id, q.baseline))
