"""Reading an upload without trusting its size: the body is counted as it streams in and refused
(413) the moment it passes the limit, so an oversized file is never held whole in memory.

Multipart bodies are parsed as they arrive; the one part allowed is named ``file`` and kept (in memory, at
most the limit), any other part is refused (400); nothing is spooled to temporary files, so an upload cut off half-way leaves nothing behind.
The client's file name is never used for anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from server.errors import ApiError

MULTIPART_SLACK = 64 * 1024  # boundaries, part headers and small fields around the file itself
MAX_PARTS = 8
MAX_PART_HEADER = 32 * 1024  # one part header line: room for absurd file names, not for a flood
FILE_FIELD = b"file"


async def read_upload(request: Request, limit: int) -> bytes:
    """The uploaded file's bytes: multipart field ``file``, or a raw ``image/*`` / octet-stream body."""
    content_type = request.headers.get("content-type", "")
    media_type, params = parse_options_header(content_type)
    is_multipart = media_type == b"multipart/form-data"
    if not is_multipart and not (media_type.startswith(b"image/") or media_type == b"application/octet-stream"):
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
            raise too_large(limit)
    chunks = _bounded_stream(request, allowed, limit)
    if not is_multipart:
        return b"".join([chunk async for chunk in chunks])
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "malformed_multipart", "The multipart Content-Type has no boundary.")
    return await _file_part(chunks, boundary, limit)


async def _bounded_stream(request: Request, allowed: int, limit: int) -> AsyncIterator[bytes]:
    """The body's chunks, refusing (413) as soon as more than ``allowed`` bytes have arrived."""
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > allowed:
                raise too_large(limit)
            yield chunk
    except ClientDisconnect:
        # Nobody will read this answer; it only ends the request cleanly (and is not logged as a crash).
        raise ApiError(400, "client_disconnected", "The client went away before the upload was complete.") from None


class _FileCollector:
    """python-multipart callbacks that keep the bytes (and file name) of the parts named in ``limits`` (field
    name → most bytes kept) and nothing else."""

    def __init__(self, limits: dict[bytes, int]) -> None:
        self.limits = limits
        self.parts_kept: dict[bytes, bytearray] = {}
        self.filenames: dict[bytes, str] = {}
        self.finished = False
        self.parts = 0
        self.other_parts = False  # a part whose name is not in ``limits`` (the schema allows none)
        self._field: bytes | None = None
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""

    @property
    def found(self) -> bool:
        return FILE_FIELD in self.parts_kept

    @property
    def data(self) -> bytearray:
        return self.parts_kept.get(FILE_FIELD, bytearray())

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise ApiError(400, "malformed_multipart", f"The upload has more than {MAX_PARTS} parts.")
        self._field = None
        self._disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name")
        if name not in self.limits:  # as the schema says: only the named parts, nothing else
            self.other_parts = True
            return
        if name in self.parts_kept:
            raise ApiError(400, "malformed_multipart", f"Send one {name.decode()} per upload.")
        self._field = name
        self.parts_kept[name] = bytearray()
        self.filenames[name] = options.get(b"filename", b"").decode("utf-8", "replace")[-200:]

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._field is not None:
            kept = self.parts_kept[self._field]
            if len(kept) + (end - start) > self.limits[self._field]:
                raise too_large(self.limits[self._field])
            kept += data[start:end]

    def on_end(self) -> None:
        self.finished = True


async def _file_part(chunks: AsyncIterator[bytes], boundary: bytes, limit: int) -> bytes:
    collector = await _collect(chunks, boundary, {FILE_FIELD: limit})
    if not collector.found:
        raise ApiError(422, "missing_file", "Send the image in a multipart field named 'file'.")
    _refuse_other_parts(collector)
    return bytes(collector.data)


def _refuse_other_parts(collector: _FileCollector) -> None:
    if collector.other_parts:
        names = ", ".join(f"'{name.decode()}'" for name in collector.limits)
        raise ApiError(400, "malformed_multipart", f"The upload has a part other than {names}; send only those "
                       "multipart fields.")


async def _collect(chunks: AsyncIterator[bytes], boundary: bytes, limits: dict[bytes, int]) -> _FileCollector:
    collector = _FileCollector(limits)
    try:
        parser = MultipartParser(boundary, collector.callbacks(), max_header_size=MAX_PART_HEADER)  # type: ignore[arg-type]
        async for chunk in chunks:
            parser.write(chunk)
        parser.finalize()
    except (MultipartParseError, ValueError) as exc:
        raise ApiError(400, "malformed_multipart", f"The multipart body could not be parsed ({exc}).") from exc
    if not collector.finished:
        raise ApiError(400, "malformed_multipart", "The multipart body ended before its closing boundary.")
    return collector


async def read_form_files(request: Request, limits: dict[str, int]) -> dict[str, tuple[bytes, str]]:
    """The multipart parts named in ``limits`` (field → most bytes) as (bytes, the client's file name); the
    body is counted as it streams (413 past the sum of the limits)."""
    media_type, params = parse_options_header(request.headers.get("content-type", ""))
    if media_type != b"multipart/form-data" or not params.get(b"boundary"):
        raise ApiError(415, "unsupported_media_type", "Send the file as multipart/form-data in a field named 'file'.")
    total = sum(limits.values())
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad_content_length", "The Content-Length header is not a number.")
        if int(declared) > total + MULTIPART_SLACK:
            raise too_large(limits.get("file", total))
    chunks = _bounded_stream(request, total + MULTIPART_SLACK, limits.get("file", total))
    collector = await _collect(chunks, params[b"boundary"], {k.encode(): v for k, v in limits.items()})
    _refuse_other_parts(collector)
    return {k.decode(): (bytes(v), collector.filenames.get(k, "")) for k, v in collector.parts_kept.items()}


def too_large(limit: int) -> ApiError:
    """413 ``file_too_large``, naming the limit."""
    size = f"{limit / (1024 * 1024):.0f} MB" if limit >= 1024 * 1024 else f"{limit:,} bytes"
    return ApiError(413, "file_too_large", f"The upload is larger than the {size} limit.")


class UploadGate:
    """At most ``max_active`` uploads are read and decoded at once: a class uploading phone photos together
    must not hold them all in memory. The others wait their turn *before* their body is read (the bytes
    stay in the network buffers, which the server stops draining), at most ``max_waiting`` of them and for
    at most ``wait_timeout_s``; beyond that: 503 + Retry-After.

    Used from the event loop only (the counters need no lock); the condition is made in the running loop.
    """

    def __init__(self, max_active: int, max_waiting: int, wait_timeout_s: float = 30.0, retry_after_s: int = 2):
        self.max_active = max(1, max_active)
        self.max_waiting = max(0, max_waiting)
        self.wait_timeout_s = wait_timeout_s
        self.retry_after_s = retry_after_s
        self.active = 0
        self.waiting = 0
        self._condition: asyncio.Condition | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _cond(self) -> asyncio.Condition:
        loop = asyncio.get_running_loop()
        if self._condition is None or self._loop is not loop:
            self._condition, self._loop = asyncio.Condition(), loop
        return self._condition

    def _overloaded(self, why: str) -> ApiError:
        return ApiError(503, "overloaded", f"Too many uploads at once ({why}); try again in a moment.",
                        {"Retry-After": str(self.retry_after_s)})

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Hold one upload slot for the block."""
        cond = self._cond()
        async with cond:
            if self.active >= self.max_active:
                if self.waiting >= self.max_waiting:
                    raise self._overloaded("queue full")
                self.waiting += 1
                try:
                    await asyncio.wait_for(cond.wait_for(lambda: self.active < self.max_active), self.wait_timeout_s)
                except TimeoutError:
                    raise self._overloaded("waited too long") from None
                finally:
                    self.waiting -= 1
            self.active += 1
        try:
            yield
        finally:
            async with cond:
                self.active -= 1
                cond.notify()
