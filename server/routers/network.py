"""The network overview (every layer as a column of its strongest channels) and the dense-layer detail."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from server.deps import ArchitecturesDep, NetworkOverviewsDep, RuntimeDep, WeightsQuery, weights_header
from server.responses import png_response

router = APIRouter(prefix="/api", tags=["network"])
IMAGE = "/models/{model}/images/{image_id}"


@router.get(f"{IMAGE}/network.json")
def network_json(model: str, image_id: str, response: Response, runtime: RuntimeDep, architectures: ArchitecturesDep,
                 network: NetworkOverviewsDep, weights: WeightsQuery = "auto") -> dict[str, Any]:
    """Columns (layers), their strongest channels with max/mean and tile rectangles in network.png."""
    loaded = runtime.load(model, weights)
    made = network.overview(loaded, image_id, architectures.get(loaded.entry)["layers"])
    response.headers.update(weights_header(loaded.variant))
    return {"model": model, "image_id": image_id, "weights_used": loaded.variant, **made.as_json()}


@router.get(f"{IMAGE}/network.png")
def network_png(model: str, image_id: str, runtime: RuntimeDep, architectures: ArchitecturesDep,
                network: NetworkOverviewsDep, weights: WeightsQuery = "auto") -> Response:
    """The thumbnails of every column's strongest channels, each column on its own colour range."""
    loaded = runtime.load(model, weights)
    made = network.overview(loaded, image_id, architectures.get(loaded.entry)["layers"])
    return png_response(made.png, weights_header(loaded.variant))


@router.get(f"{IMAGE}/layers/{{layer}}/dense.json")
def dense_unit(model: str, image_id: str, layer: str, response: Response, runtime: RuntimeDep,
               network: NetworkOverviewsDep, unit: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
               top: Annotated[int, Query(ge=1, le=64)] = 12, weights: WeightsQuery = "auto") -> dict[str, Any]:
    """One unit of a linear layer: bias + Σ weight × input, with its largest terms (by size) first."""
    loaded = runtime.load(model, weights)
    answer = network.dense(loaded, image_id, layer, unit, top)
    response.headers.update(weights_header(loaded.variant))
    return {"model": model, "image_id": image_id, "weights_used": loaded.variant, **answer}
