"""Reading an upload without trusting its size: the body is counted as it streams in and refused
(413) the moment it passes the limit, so an oversized file is never held whole in memory."""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import UploadFile

from server.errors import ApiError

MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file itself


async def read_upload(request: Request, limit: int) -> bytes:
    """The uploaded file's bytes: multipart field ``file``, or a raw ``image/*`` body."""
    content_type = request.headers.get("content-type", "").lower()
    is_multipart = content_type.startswith("multipart/form-data")
    if not is_multipart and not content_type.startswith(("image/", "application/octet-stream")):
        raise ApiError(
            415,
            "unsupported_media_type",
            "Upload the image as multipart/form-data in a field named 'file' (or as a raw image/* body).",
        )
    allowed = limit + (MULTIPART_SLACK if is_multipart else 0)
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad_content_length", "The Content-Length header is not a number.")
        if int(declared) > allowed:
            raise _too_large(limit)
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > allowed:
            raise _too_large(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    if not is_multipart:
        return body
    request._body = body  # Starlette parses the form from the buffered body instead of the spent stream
    try:
        form = await request.form(max_files=1, max_fields=8)
    except Exception as exc:  # python-multipart's errors are varied; all mean a malformed body
        raise ApiError(400, "malformed_multipart", f"The multipart body could not be parsed ({exc}).") from exc
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "missing_file", "Send the image in a multipart field named 'file'.")
        data = await upload.read()
    finally:
        await form.close()
    if len(data) > limit:
        raise _too_large(limit)
    return data


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "file_too_large", f"The upload is larger than the {limit // (1024 * 1024)} MB limit.")
