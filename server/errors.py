"""One error shape for the whole API: ``{"error": {"code": "<snake_case>", "message": "<sentence>"}}``."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse  # what fastapi.responses names too

if TYPE_CHECKING:  # FastAPI is imported where the handlers are installed: the page served while
    from fastapi import FastAPI  # `convscope serve` loads (server.startup) needs neither it nor PyTorch
    from fastapi.exceptions import RequestValidationError

log = logging.getLogger("convscope")

_DEFAULT_CODES = {
    400: "bad_request",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "body_timeout",
    409: "conflict",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "service_unavailable",
}


class ApiError(Exception):
    """An error meant for the client, raised by services and routers alike."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
    return "Invalid request — " + "; ".join(parts) if parts else "Invalid request."


def _validation_code(exc: RequestValidationError) -> str:
    """For a field of a JSON body out of its bounds, the code the sandbox's own checks use:
    ``invalid_<field>`` (a number out of range, an empty list), ``<field>_too_large`` (a list over its
    length); otherwise (wrong types, unknown names) ``validation_error``."""
    errors = exc.errors()
    loc = tuple(errors[0].get("loc", ())) if errors else ()
    if len(loc) >= 2 and loc[0] == "body" and isinstance(loc[1], str) and loc[1].isidentifier():
        kinds = {err.get("type") for err in errors if tuple(err.get("loc", ()))[:2] == loc[:2]}
        if kinds & _OUT_OF_RANGE:
            return f"invalid_{loc[1]}"
        if "too_long" in kinds:
            return f"{loc[1]}_too_large"
    return "validation_error"


_OUT_OF_RANGE = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number", "too_short"}


def _allowed_methods(request: Request) -> list[str]:
    """Every method the schema declares for the request's path (Starlette names only the first route's),
    plus HEAD wherever GET is (server.middleware.security.HeadMiddleware)."""
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        pattern = "[^/]+".join(re.escape(part) for part in re.split(r"\{[^}]+\}", template))
        if re.fullmatch(pattern, request.url.path):
            methods |= {m.upper() for m in operations if m in ("get", "post", "put", "patch", "delete")}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def release_accelerator_memory() -> None:
    """Return cached, unused GPU memory to the device after an out-of-memory error."""
    import torch  # here, not at the top: the page served while `convscope serve` loads needs no PyTorch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        mps.empty_cache()


def install_error_handlers(app: FastAPI) -> None:
    import torch  # the full app's: see release_accelerator_memory
    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, _validation_code(exc), _describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _DEFAULT_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 404 and message == "Not Found":
            message = "There is no such resource."
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            allowed = _allowed_methods(request)
            if allowed:
                headers["Allow"] = ", ".join(allowed)
                message = f"This resource answers {', '.join(allowed)}, not {request.method}."
        return error_response(exc.status_code, code, message, headers or None)

    @app.exception_handler(torch.OutOfMemoryError)
    async def _out_of_memory(_: Request, exc: torch.OutOfMemoryError) -> JSONResponse:
        # A request too big for the accelerator right now: free the allocator's cache and let the client
        # retry; the server itself carries on (every hook and limiter slot is released by its finally).
        log.warning("out of memory: %s", str(exc).splitlines()[0] if str(exc) else "")
        release_accelerator_memory()
        return error_response(503, "out_of_memory", "The server ran out of GPU memory for this request; "
                              "try again in a moment, or use a smaller model or image.", {"Retry-After": "2"})

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "The server hit an unexpected error; it has been logged.")
