"""Uploads, stored images, and what a model sees of them: input tensor, input picture, predictions."""

from __future__ import annotations

import io
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from server.deps import (
    ImageStoreDep,
    InputsDep,
    LoadedModelDep,
    OutputsDep,
    SettingsDep,
    UploadGateDep,
)
from server.errors import ApiError
from server.responses import npy_response, png_response
from server.services.model_inputs import input_picture
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
def model_input(image_id: str, loaded: LoadedModelDep, inputs: InputsDep) -> Response:
    return npy_response(inputs.tensor(loaded, image_id).numpy())


@router.get("/models/{model}/images/{image_id}/input.png")
def model_input_picture(image_id: str, loaded: LoadedModelDep, inputs: InputsDep) -> Response:
    buf = io.BytesIO()
    input_picture(loaded, inputs.tensor(loaded, image_id)).save(buf, format="PNG")
    return png_response(buf.getvalue())


@router.get("/models/{model}/images/{image_id}/predictions")
def predictions(model: str, image_id: str, loaded: LoadedModelDep, outputs: OutputsDep,
                top_k: Annotated[int, Query(ge=1, le=1000)] = 5) -> dict[str, Any]:
    if top_k > loaded.entry.num_classes:
        raise ApiError(422, "invalid_top_k", f"top_k must be at most {loaded.entry.num_classes} for {model}.")
    # One forward result per (model, weights, image), shared with feature maps and saliency; concurrent
    # misses for one model share one batched forward pass.
    preds = predictions_from_logits(loaded, outputs.logits(loaded, image_id), top_k)
    return {"predictions": preds, "weights_used": loaded.variant}
