"""POST /api/models: an ONNX or Keras model dropped into the page (server.services.model_uploads)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from server.deps import ChannelExamplesDep, ClientAddressDep, ModelUploadsDep, RuntimeDep, SettingsDep, UploadGateDep
from server.errors import ApiError
from server.routers.models import model_summary
from server.services.images.upload import read_form_files
from server.services.model_uploads.uploads import MAX_LABELS_BYTES

router = APIRouter(prefix="/api", tags=["models"])

UPLOAD_BODY = {
    "required": True,
    "description": "A multipart form: `file`, an `.onnx` file (weights inside it) or a Keras 3 `.keras` file, at "
                   "most 200 MB (CONVSCOPE_MAX_MODEL_UPLOAD_BYTES); optional `labels`, a UTF-8 text file with one "
                   "class name per line (at most 1 MB). TorchScript archives and pickles are refused.",
    "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary", "description": "the .onnx or .keras file"},
                       "labels": {"type": "string", "format": "binary", "description": "class names, one a line"}},
    }}},
}
UPLOADED_MODEL = {"id": "upload-3f1c0a9b7e2d4c5f8a6b1e0d9c8b7a65", "title": "my-net", "dataset": "your upload",
                  "family": "upload", "input": {"channels": 1, "height": 28, "width": 28}, "num_classes": 10,
                  "weights": {"state": "local", "detail": "the weights in my-net (sha256 3f1c0a9b7e2d…)"},
                  "default_layer": "Conv_1", "metrics": None}


@router.post("/models", status_code=201, summary="Add a model from an ONNX or Keras file (scoped to you, dropped "
             "after an idle time)", openapi_extra={"requestBody": UPLOAD_BODY},
             responses={201: {"description": "The model, as GET /api/models lists it; use its id in every "
                                             "model URL", "content": {"application/json": {"example": UPLOADED_MODEL}}},
                        403: {"description": "Uploads are off on this server (it says how to turn them on)"},
                        413: {"description": "The file, its tensors or the memory for uploaded models is too large"},
                        415: {"description": "Not an ONNX or Keras file (TorchScript and pickles are refused)"},
                        422: {"description": "A file that cannot become a model; the message names the cause"},
                        429: {"description": "This client has as many uploaded models as it may have; one is "
                                             "dropped when unused for the idle time (`Retry-After`: the soonest)",
                              "headers": {"Retry-After": {"description": "seconds until this client's least "
                                                          "recently used upload is dropped if nobody uses it",
                                                          "schema": {"type": "integer", "minimum": 0}}}}})
async def upload_model(request: Request, uploads: ModelUploadsDep, runtime: RuntimeDep, settings: SettingsDep,
                       gate: UploadGateDep, client: ClientAddressDep,
                       channel_examples: ChannelExamplesDep) -> dict[str, Any]:
    uploads.check_enabled()  # before the body is read
    async with gate.admit():
        parts = await read_form_files(request, {"file": settings.max_model_upload_bytes, "labels": MAX_LABELS_BYTES})
        if "file" not in parts:
            raise ApiError(422, "missing_file", "Send the model in a multipart field named 'file'.")
        data, filename = parts["file"]
        labels = parts.get("labels", (None, ""))[0]
        entry = await run_in_threadpool(uploads.add, data, filename, labels, client)
    return model_summary(entry, runtime, channel_examples)
