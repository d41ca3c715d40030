"""Uploads, stored images, and what a model sees of them: input tensor, input picture, predictions."""

from __future__ import annotations

import io
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from server.deps import (
    BatcherDep,
    ImageStoreDep,
    RuntimeDep,
    SettingsDep,
    UploadGateDep,
    WeightsQuery,
    weights_header,
)
from server.errors import ApiError
from server.responses import npy_response, png_response
from server.services.model_inputs import input_batch, input_picture, input_tensor
from server.services.predictions import predictions_from_logits
from server.services.upload import read_upload

router = APIRouter(prefix="/api", tags=["images"])


@router.post("/images", status_code=201)
async def upload_image(request: Request, store: ImageStoreDep, settings: SettingsDep,
                       gate: UploadGateDep) -> dict[str, Any]:
    async with gate.admit():  # a few uploads in memory at once; the rest wait with their bodies unread
        data = await read_upload(request, settings.max_upload_bytes)
        stored = await run_in_threadpool(store.put, data)  # decoding is CPU work: off the event loop
    return {"image_id": stored.image_id, "width": stored.width, "height": stored.height}


@router.get("/images/{image_id}")
def stored_image(image_id: str, store: ImageStoreDep) -> Response:
    return png_response(store.png_bytes(image_id), {"Cache-Control": "public, max-age=31536000, immutable"})


@router.get("/models/{model}/images/{image_id}/input.npy")
def model_input(model: str, image_id: str, runtime: RuntimeDep, store: ImageStoreDep,
                weights: WeightsQuery = "auto") -> Response:
    loaded = runtime.load(model, weights)
    return npy_response(input_tensor(loaded, store, image_id).numpy(), weights_header(loaded.variant))


@router.get("/models/{model}/images/{image_id}/input.png")
def model_input_picture(model: str, image_id: str, runtime: RuntimeDep, store: ImageStoreDep,
                        weights: WeightsQuery = "auto") -> Response:
    loaded = runtime.load(model, weights)
    buf = io.BytesIO()
    input_picture(loaded, input_tensor(loaded, store, image_id)).save(buf, format="PNG")
    return png_response(buf.getvalue(), weights_header(loaded.variant))


@router.get("/models/{model}/images/{image_id}/predictions")
def predictions(model: str, image_id: str, runtime: RuntimeDep, store: ImageStoreDep, batcher: BatcherDep,
                response: Response,
                top_k: Annotated[int | None, Query(ge=1, le=1000)] = None,
                weights: WeightsQuery = "auto") -> dict[str, Any]:
    loaded = runtime.load(model, weights)
    if top_k is None:  # top 5 by default, or every class of a model that has fewer
        top_k = min(5, loaded.entry.num_classes)
    if top_k > loaded.entry.num_classes:
        raise ApiError(422, "invalid_top_k", f"top_k must be at most {loaded.entry.num_classes} for {model}.")
    response.headers.update(weights_header(loaded.variant))
    # Concurrent requests for this model share one forward pass; the batcher takes the limiter's slot.
    logits = batcher.outputs(loaded, input_batch(loaded, store, image_id))
    preds = predictions_from_logits(loaded, logits[0], top_k)
    return {"predictions": preds, "weights_used": loaded.variant}
