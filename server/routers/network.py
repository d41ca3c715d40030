"""The network overview (every layer as a column of its strongest channels) and the dense-layer detail."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from server.deps import ImageStoreDep, LimiterDep, RuntimeDep, SettingsDep, WeightsQuery, weights_header
from server.responses import png_response
from server.services import network_overview as network
from server.services.model_inputs import input_batch

router = APIRouter(prefix="/api", tags=["network"])
IMAGE = "/models/{model}/images/{image_id}"


def _overview(request: Request, model: str, image_id: str, weights: str, runtime: RuntimeDep, store: ImageStoreDep,
              limiter: LimiterDep, settings: SettingsDep) -> tuple[Any, network.NetworkOverview]:
    loaded = runtime.load(model, weights)
    layers = request.app.state.architectures.get(loaded.entry)["layers"]
    columns = network.choose_columns(layers, settings.network_max_columns)
    batch = input_batch(loaded, store, image_id)  # 404 for an unknown image before any work
    made = request.app.state.network_overviews.get(
        loaded, image_id,
        lambda: network.build_network(loaded, batch, columns, settings.network_channels_per_column,
                                      settings.network_all_channels_up_to),
        limiter.admit)
    return loaded, made


@router.get(f"{IMAGE}/network.json")
def network_json(model: str, image_id: str, request: Request, response: Response, runtime: RuntimeDep,
                 store: ImageStoreDep, limiter: LimiterDep, settings: SettingsDep,
                 weights: WeightsQuery = "auto") -> dict[str, Any]:
    """Columns (layers), their strongest channels with max/mean and tile rectangles in network.png."""
    loaded, made = _overview(request, model, image_id, weights, runtime, store, limiter, settings)
    response.headers.update(weights_header(loaded.variant))
    return {"model": model, "image_id": image_id, "weights_used": loaded.variant, **made.as_json()}


@router.get(f"{IMAGE}/network.png")
def network_png(model: str, image_id: str, request: Request, runtime: RuntimeDep, store: ImageStoreDep,
                limiter: LimiterDep, settings: SettingsDep, weights: WeightsQuery = "auto") -> Response:
    """The thumbnails of every column's strongest channels, each column on its own colour range."""
    loaded, made = _overview(request, model, image_id, weights, runtime, store, limiter, settings)
    return png_response(made.png, weights_header(loaded.variant))


@router.get(f"{IMAGE}/layers/{{layer}}/dense.json")
def dense_unit(model: str, image_id: str, layer: str, response: Response, runtime: RuntimeDep, store: ImageStoreDep,
               limiter: LimiterDep, unit: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
               top: Annotated[int, Query(ge=1, le=64)] = 12, weights: WeightsQuery = "auto") -> dict[str, Any]:
    """One unit of a linear layer: bias + Σ weight × input, with its largest terms (by size) first."""
    loaded = runtime.load(model, weights)
    loaded.layer(layer)
    batch = input_batch(loaded, store, image_id)
    with limiter.admit():
        answer = network.dense_contributions(loaded, batch, layer, unit, top)
    response.headers.update(weights_header(loaded.variant))
    return {"model": model, "image_id": image_id, "weights_used": loaded.variant, **answer}
