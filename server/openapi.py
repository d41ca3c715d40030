"""The OpenAPI schema, made to tell the truth (issue 15): what every operation returns and in which media
type, the errors it can give (one shared ``Error`` schema), one-line summaries, tags with descriptions.

Routers declare what is particular to an endpoint (``responses=`` with examples, parameter bounds, request
bodies); :func:`install_openapi` adds what holds for every endpoint alike, so endpoints added later get it
too:

- a binary answer (path ending ``.npy``, ``.png``, ``.gif``, ``.webm``) is declared with its real media type
  and ``format: binary``, never as JSON;
- the error answers that the middleware and the common checks can give: 400 (a bad ``Host``, a bad
  ``Content-Length``…), 414 (URL too long), 404 where there are path parameters (unknown model, image,
  layer…), 422 where there are parameters or a body, 403/408/413/415 where there is a body, 429/503 where
  the request may do model work; all with the ``Error`` schema (FastAPI's own ``HTTPValidationError`` is
  not what this API answers, so it is replaced);
- a one-line summary from the first line of the endpoint's docstring, where none is given.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from server.services.images.store import IMAGE_ID_PATTERN

BINARY_SUFFIXES = {
    ".npy": ("application/octet-stream", "A NumPy .npy file (float32, C order), as `numpy.load` reads it."),
    ".png": ("image/png", "A PNG image."),
    ".gif": ("image/gif", "An animated GIF."),
    ".webm": ("video/webm", "A WebM video."),
}

ERROR_DESCRIPTIONS = {
    400: "Bad request: malformed input, an unknown `Host` name (`invalid_host`), a bad `Content-Length`.",
    403: "Refused: a state-changing request from a page of another origin (`foreign_origin`).",
    404: "Unknown model, image, layer, channel or other resource named in the path.",
    408: "The request body stalled (`body_timeout`).",
    409: "The trained weights asked for are not available here (`weights_unavailable`): download them, or ask "
         "for `weights=untrained`.",
    413: "The request body or the image is too large.",
    414: "The URL is too long (`uri_too_long`).",
    415: "Unsupported media type.",
    422: "A parameter or the body is invalid (`validation_error` or a specific code).",
    429: "This client already has its share of the server's work: retry after `Retry-After` seconds.",
    503: "The server is busy: retry after `Retry-After` seconds.",
}

# Endpoints that only read small catalogues: no model work, so never 429/503.
NO_WORK = ("/api/health", "/api/models", "/api/saliency/methods", "/api/sandbox/presets", "/api/samples")

TAGS = [
    {"name": "health", "description": "Is the server up, on which device, which version."},
    {"name": "models", "description": "The model catalogue, each model's layers and parameters (`weights.npy`, "
                                      "`bias.npy`), and downloads of torchvision weights."},
    {"name": "images", "description": "Uploads (multipart field `file`, or a raw `image/*` body), the stored "
                                      "picture, what a model sees of it (`input.npy`, `input.png`) and its "
                                      "predictions."},
    {"name": "samples", "description": "Gallery pictures to start from (Shapes, MNIST, photos)."},
    {"name": "activations", "description": "Feature maps: a layer's output as .npy, statistics, channel "
                                           "pictures and atlases, and an overview strip of every layer."},
    {"name": "filters", "description": "Learned filters: kernel atlases (paged) and weight histograms."},
    {"name": "step-through", "description": "Every number behind one output cell of a layer (the trace), the "
                                            "layer's input and output, and the softmax."},
    {"name": "sandbox", "description": "Small grids convolved and pooled step by step, kernel presets, Gabor "
                                       "kernels, and kernels applied to a whole uploaded picture."},
    {"name": "saliency", "description": "Grad-CAM, gradients, occlusion and more: maps as .npy, PNG overlays, "
                                        "the top-k classes at once, progress of long runs."},
    {"name": "network", "description": "The whole network for one image: every layer as a column of its "
                                       "strongest channels (network.json + network.png), and one linear unit's "
                                       "weight × input terms (dense.json)."},
    {"name": "channels", "description": "What a channel looks for: the dataset images that excite it most "
                                        "(precomputed in the background, 202 with progress meanwhile), their "
                                        "receptive-field crops, and an image optimised to excite it."},
    {"name": "image folders", "description": "The named folders of images the server was given "
                                             "(`convscope serve --image-folder NAME=PATH`): the datasets "
                                             "`folder:NAME` of channel examples and training."},
    {"name": "trust", "description": "Can we trust this map? Cascading model randomisation of each saliency "
                                     "method (sanity.json: a background job, 202 with progress meanwhile; the "
                                     "maps per step) and deletion/insertion curves with their AUCs against a "
                                     "random pixel order (deletion.json)."},
    {"name": "sessions", "description": "Classroom sessions: a teacher's view state followed by students "
                                        "(server-sent events), and the class's submissions with predictions."},
    {"name": "experiments", "description": "What-if experiments on one image: channels of a layer switched off "
                                           "(ablation), patches over the image (occlusion probe), FGSM/PGD "
                                           "adversarial examples in pixel space, two models compared layer by "
                                           "layer (cosine similarity)."},
    {"name": "training", "description": "Training runs in the page: each in its own worker process, streamed "
                                        "(loss, accuracy, learning rate, first-layer filters, a probe image's "
                                        "top-5), checkpointed every epoch; a run is the model `run-<id>` whose "
                                        "checkpoints are its weights (`?weights=epoch-3`)."},
    {"name": "live", "description": "Live mode: `WS /api/models/{model}/live` (a WebSocket, not in this "
                                    "schema) takes image frames and answers predictions and maps per frame."},
]

DESCRIPTION = """\
See what a convolutional network does to your image. The stable core is in API.md; everything else the
page uses is here, grouped by tag.

* Model-scoped URLs take `?weights=auto|trained|untrained` (a training run's model also `epoch-<n>`,
  `step-<n>`) and answer with `X-ConvScope-Weights`.
* Binary answers are declared with their media type: `.npy` (float32 NumPy arrays) and `.png`.
* Every error is `{"error": {"code": "<snake_case>", "message": "<sentence>"}}` (schema `Error`);
  overload answers 429/503 with `Retry-After`.
* `HEAD` works wherever `GET` does.
"""


class ErrorDetail(BaseModel):
    code: str = Field(description="snake_case, stable: what went wrong", examples=["unknown_model"])
    message: str = Field(description="a sentence for a person", examples=["There is no model 'nope'."])


class Error(BaseModel):
    """Every 4xx/5xx answer of this API."""

    error: ErrorDetail


ERROR_REF = {"$ref": "#/components/schemas/Error"}


# Documented answers of the main operations (documentation only: ``responses={...: {"model": ...}}`` does
# not filter what the endpoint returns; schemathesis checks that the answers match them).
class Health(BaseModel):
    status: str = Field(examples=["ok"], description="ok; while `convscope serve` still loads PyTorch and the models "
                        "behind the page it serves at once: loading (API requests wait for it), or failed (it could "
                        "not start, and stops)")
    device: str = Field(description="cpu, cuda:N or mps", examples=["cpu"])
    version: str


class Uploaded(BaseModel):
    image_id: str = Field(pattern=IMAGE_ID_PATTERN, description="sha256 of the uploaded bytes")
    width: int = Field(ge=1, le=2048, description="of the stored, upright working copy")
    height: int = Field(ge=1, le=2048)


class Prediction(BaseModel):
    index: int = Field(ge=0, description="class index")
    label: str
    probability: float = Field(ge=0, le=1)


class Predictions(BaseModel):
    predictions: list[Prediction] = Field(description="most probable first")
    weights_used: str = Field(description="trained or untrained")


def json_answer(model: type[BaseModel], example: Any, status: int = 200,
                description: str = "Successful Response") -> dict[int | str, dict[str, Any]]:
    """``responses=`` declaring the JSON answer's schema (a pydantic model) with an example."""
    return {status: {"model": model, "description": description,
                     "content": {"application/json": {"example": example}}}}


def binary(media_type: str, description: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for an endpoint whose 200 answer is a binary file."""
    return {200: {"description": description, "content": {media_type: {"schema": {"type": "string", "format": "binary"}}}}}


def json_example(example: Any, status: int = 200, description: str = "Successful Response") -> dict[int | str, dict[str, Any]]:
    """``responses=`` carrying an example of the JSON answer."""
    return {status: {"description": description, "content": {"application/json": {"example": example}}}}


def _binary_type(path: str) -> tuple[str, str] | None:
    for suffix, found in BINARY_SUFFIXES.items():
        if path.endswith(suffix):
            return found
    return None


def _error_statuses(path: str, method: str, operation: dict[str, Any]) -> list[int]:
    params = operation.get("parameters", [])
    has_body = "requestBody" in operation
    statuses = [400, 414]
    if any(p.get("in") == "path" for p in params) or path.startswith("/api/samples/"):
        statuses.append(404)
    if params or has_body:
        statuses.append(422)
    if any(p.get("name") == "weights" for p in params):
        statuses.append(409)  # weights_unavailable: trained weights asked for that are not there
    if method in ("post", "put", "patch", "delete"):
        statuses += [403, 408, 413, 415]
    if path not in NO_WORK:
        statuses += [429, 503]
    return sorted(set(statuses))


def _retry_after() -> dict[str, Any]:
    return {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}


def _fix_operation(path: str, method: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    found = _binary_type(path)
    if found is not None:
        media_type, description = found
        for status, response in responses.items():
            if status.startswith("2"):
                content = response.setdefault("content", {})
                content.pop("application/json", None)
                content.setdefault(media_type, {"schema": {"type": "string", "format": "binary"}})
                if response.get("description") in (None, "", "Successful Response"):
                    response["description"] = description
    for status in _error_statuses(path, method, operation):
        response = responses.setdefault(str(status), {})
        if not response.get("description") or response["description"] == "Validation Error":
            response["description"] = ERROR_DESCRIPTIONS[status]
        response["content"] = {"application/json": {"schema": ERROR_REF}}
        if status in (429, 503):
            response["headers"] = _retry_after()
    for status, response in responses.items():
        content = response.get("content", {})
        if status.startswith("2") and any(media != "application/json" and spec.get("schema", {}).get("format") == "binary"
                                          for media, spec in content.items()):
            content.pop("application/json", None)  # a binary answer declared by its router: not JSON too
        schema = content.get("application/json", {}).get("schema", {})
        if status.startswith("2") and "$ref" in schema:  # a declared model, not FastAPI's "any dict" beside it
            response["content"]["application/json"]["schema"] = {"$ref": schema["$ref"]}
    for status, response in responses.items():  # errors a router declared itself: the same schema
        if status[0] in "45":
            response["content"] = {"application/json": {"schema": ERROR_REF}}


def _generated_summary(operation: dict[str, Any]) -> bool:
    """Whether the summary is FastAPI's default (the function name in title case, which starts the id)."""
    summary = operation.get("summary", "")
    return operation.get("operationId", "").startswith(summary.lower().replace(" ", "_") + "_")


def _summary_from_docstring(operation: dict[str, Any]) -> None:
    """An endpoint without ``summary=``: the first sentence of its docstring (else FastAPI's title-cased name)."""
    description = (operation.get("description") or "").strip()
    if description:
        first = description.split("\n\n")[0].replace("\n", " ")
        sentence = re.split(r"(?<=[.;])\s", first)[0].rstrip(".;:")
        if len(sentence) > 90:
            sentence = sentence[:88].rsplit(" ", 1)[0].rstrip(",;:(") + "…"
        operation["summary"] = sentence


def build_schema(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=app.version, description=DESCRIPTION, routes=app.routes,
                         tags=TAGS)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["ErrorDetail"] = ErrorDetail.model_json_schema()
    components["Error"] = Error.model_json_schema(ref_template="#/components/schemas/{model}")
    components["Error"].pop("$defs", None)
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if isinstance(operation, dict) and "responses" in operation:
                _fix_operation(path, method, operation)
                if _generated_summary(operation):
                    _summary_from_docstring(operation)
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


def install_openapi(app: FastAPI) -> None:
    """Serve :func:`build_schema`'s schema at /openapi.json (built once, on first use)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_schema(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
