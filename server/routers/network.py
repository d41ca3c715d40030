"""The network overview (every layer as a column of its strongest channels) and the dense-layer detail."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from server.deps import ArchitecturesDep, LayerDep, LoadedModelDep, NetworkOverviewsDep
from server.responses import png_response

router = APIRouter(prefix="/api", tags=["network"])
IMAGE = "/models/{model}/images/{image_id}"


@router.get(f"{IMAGE}/network.json")
def network_json(image_id: str, loaded: LoadedModelDep, architectures: ArchitecturesDep,
                 network: NetworkOverviewsDep) -> dict[str, Any]:
    """Columns (layers), their strongest channels with max/mean and tile rectangles in network.png."""
    made = network.overview(loaded, image_id, architectures.get(loaded.entry)["layers"])
    return {"model": loaded.entry.id, "image_id": image_id, "weights_used": loaded.variant, **made.as_json()}


@router.get(f"{IMAGE}/network.png")
def network_png(image_id: str, loaded: LoadedModelDep, architectures: ArchitecturesDep,
                network: NetworkOverviewsDep) -> Response:
    """The thumbnails of every column's strongest channels, each column on its own colour range."""
    return png_response(network.overview(loaded, image_id, architectures.get(loaded.entry)["layers"]).png)


@router.get(f"{IMAGE}/layers/{{layer}}/dense.json")
def dense_unit(image_id: str, layer: LayerDep, loaded: LoadedModelDep, network: NetworkOverviewsDep,
               unit: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
               top: Annotated[int, Query(ge=1, le=64)] = 12) -> dict[str, Any]:
    """One unit of a linear layer: bias + Σ weight × input, with its largest terms (by size) first."""
    answer = network.dense(loaded, image_id, layer, unit, top)
    return {"model": loaded.entry.id, "image_id": image_id, "weights_used": loaded.variant, **answer}
