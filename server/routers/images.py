"""Uploads, stored images, and what a model sees of them: input tensor, input picture, predictions."""

from __future__ import annotations

import io
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from server.deps import (
    ClientAddressDep,
    ImageStoreDep,
    InputsDep,
    LoadedModelDep,
    OutputsDep,
    RuntimeDep,
    SettingsDep,
    UploadGateDep,
    UploadQuotaDep,
)
from server.openapi import Predictions, Uploaded, binary, json_answer
from server.responses import npy_response, png_response
from server.services.images.upload import read_upload
from server.services.runtime.inputs import input_picture
from server.services.runtime.outputs import predictions_from_logits

router = APIRouter(prefix="/api", tags=["images"])

_BINARY = {"schema": {"type": "string", "format": "binary"}}
UPLOAD_BODY = {
    "required": True,
    "description": "The picture: a multipart form with one field named `file` (any file name), or the bytes "
                   "themselves with an `image/*` or `application/octet-stream` Content-Type. PNG, JPEG, GIF, "
                   "WebP, BMP or TIFF; at most 20 MB (CONVSCOPE_MAX_UPLOAD_BYTES) and 50 megapixels.",
    "content": {
        "multipart/form-data": {
            # The server refuses any part but `file` (400), as the schema says.
            "schema": {"type": "object", "required": ["file"], "additionalProperties": False,
                       "description": "Exactly one part, `file`; a body with any other part is refused (400).",
                       "properties": {"file": {"type": "string", "format": "binary",
                                               "description": "the image file"}}},
            "encoding": {"file": {"contentType": "image/png, image/jpeg, image/gif, image/webp, image/bmp, "
                                                 "image/tiff, application/octet-stream"}},
        },
        "image/*": _BINARY, "application/octet-stream": _BINARY,
    },
}
UPLOADED = {"image_id": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "width": 640, "height": 480}
PREDICTIONS = {"predictions": [{"index": 7, "label": "7", "probability": 0.981},
                               {"index": 1, "label": "1", "probability": 0.012}], "weights_used": "trained"}


@router.post("/images", status_code=201, summary="Upload an image; its id is the sha256 of the bytes",
             openapi_extra={"requestBody": UPLOAD_BODY},
             responses=json_answer(Uploaded, UPLOADED, 201, "Stored: the id and the size of the upright working copy"))
async def upload_image(request: Request, store: ImageStoreDep, settings: SettingsDep, gate: UploadGateDep,
                       quota: UploadQuotaDep, client: ClientAddressDep, inputs: InputsDep,
                       runtime: RuntimeDep) -> dict[str, Any]:
    quota.check(client)  # a spent quota is refused before the body is read
    async with gate.admit():  # a few uploads in memory at once; the rest wait with their bodies unread
        data = await read_upload(request, settings.max_upload_bytes)
        quota.check(client, len(data))
        quota.charge(client, len(data))
        stored = await run_in_threadpool(store.put, data, client)  # decoding is CPU work: off the event loop
        quota.charge_more(client, stored.stored_bytes - len(data))
    # the loaded models' input tensors, from the decoded copy the upload just made (its first views start at once)
    await run_in_threadpool(inputs.prepare, stored.image_id, runtime.loaded_models())
    return {"image_id": stored.image_id, "width": stored.width, "height": stored.height}


@router.get("/images/{image_id}", summary="The stored picture (upright RGB, at most 2048 px), as PNG",
            responses=binary("image/png", "The stored picture."))
def stored_image(image_id: str, store: ImageStoreDep) -> Response:
    return png_response(store.png_bytes(image_id), {"Cache-Control": "public, max-age=31536000, immutable"})


@router.get("/models/{model}/images/{image_id}/input.npy",
            summary="The tensor the model sees after preprocessing: float32 C×H×W .npy")
def model_input(image_id: str, loaded: LoadedModelDep, inputs: InputsDep) -> Response:
    return npy_response(inputs.tensor(loaded, image_id).numpy())


@router.get("/models/{model}/images/{image_id}/input.png", summary="What the model sees, as a picture")
def model_input_picture(image_id: str, loaded: LoadedModelDep, inputs: InputsDep) -> Response:
    buf = io.BytesIO()
    input_picture(loaded, inputs.tensor(loaded, image_id)).save(buf, format="PNG")
    return png_response(buf.getvalue())


@router.get("/models/{model}/images/{image_id}/predictions", summary="The top classes and their probabilities",
            responses=json_answer(Predictions, PREDICTIONS))
def predictions(image_id: str, loaded: LoadedModelDep, outputs: OutputsDep,
                top_k: Annotated[int, Query(ge=1, le=1000, description="how many classes; more than the model "
                                                                       "has gives all of them")] = 5) -> dict[str, Any]:
    top_k = min(top_k, loaded.entry.num_classes)  # the schema cannot know each model's count
    # One forward result per (model, weights, image), shared with feature maps and saliency; concurrent
    # misses for one model share one batched forward pass.
    preds = predictions_from_logits(loaded, outputs.logits(loaded, image_id), top_k)
    return {"predictions": preds, "weights_used": loaded.variant}
