"""Gallery samples: GET /api/samples (a list) and GET /api/samples/{sample_id}.png (the picture)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from server.deps import SamplesDep
from server.errors import ApiError
from server.responses import png_response
from server.services.images import samples

router = APIRouter(prefix="/api", tags=["samples"])

# Sample ids are fixed forever (the pixels come from the index), so browsers may keep them a day.
SAMPLE_CACHE = {"Cache-Control": "public, max-age=86400, immutable"}


@router.get("/samples")
def list_samples(
    gallery: SamplesDep,
    dataset: Literal["shapes", "mnist", "photos"] = "shapes",
    count: Annotated[int, Query(ge=1, le=samples.MAX_COUNT)] = samples.DEFAULT_COUNT,
) -> dict[str, list[dict[str, str]]]:
    """Samples whose labels cycle through the dataset's classes; MNIST and photos are empty when their data is absent."""
    found = gallery.list(dataset, count)
    return {"samples": [{"id": s.id, "dataset": s.dataset, "label": s.label, "url": s.url} for s in found]}


@router.get("/samples/{sample_id}.png", response_class=Response)
def sample_png(sample_id: str, gallery: SamplesDep) -> Response:
    """One sample as PNG bytes (Shapes: 64×64 RGB; MNIST: 28×28 grey, light digit on black; photos: ≤ 512 px)."""
    try:
        png = gallery.png(sample_id)
    except samples.UnknownSample as exc:
        raise ApiError(404, "unknown_sample", str(exc)) from exc
    return png_response(png, SAMPLE_CACHE)
