"""Turn uploaded bytes into an upright RGB picture, or a clear client error, at a bounded cost.

Handles the odd files students own: EXIF rotation, CMYK, 16-bit and 1-bit, palette with transparency,
alpha, animated GIF/WebP (first frame), and refuses empties, non-images, truncated files and
decompression bombs before they cost memory. The decoder itself is :mod:`server.services.images.decode_worker`;
the server runs it in a child process under hard CPU-time, memory and wall-clock limits
(:class:`IsolatedDecoder`), so a crafted file costs a bounded few seconds at most, and whatever a decode
allocated goes back to the system with the child.

Error codes: 400 ``empty_file``; 415 ``unsupported_media_type`` (not an image we read); 422
``corrupt_image`` (an image format's signature, but damaged or truncated); 413 ``image_too_large``
(more pixels, or more decoded bytes, than allowed, judged from the header before any pixel is decoded);
422 ``image_too_costly`` (too many JPEG scans, or over the CPU/time limit while decoding); 503
``overloaded`` (every decode slot busy for too long).
"""

from __future__ import annotations

import json
import signal
import sys
from dataclasses import dataclass

from PIL import Image

from server.errors import ApiError
from server.services.images import decode_worker
from server.services.images.decode_worker import (  # noqa: F401 - re-exported for callers and tests
    MAX_WORKING_SIDE,
    READABLE_FORMATS,
    DecodeError,
    looks_like_image,
)
from server.services.work.child_processes import ChildProcessPool


def decode_image(data: bytes, max_pixels: int, max_decoded_bytes: int | None = None,
                 max_scans: int = decode_worker.DEFAULT_MAX_SCANS) -> Image.Image:
    """Decode in this process (the same code the worker runs): an RGB image, or an :class:`ApiError`."""
    try:
        return decode_worker.decode_image(data, max_pixels, max_decoded_bytes, max_scans)
    except DecodeError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None


@dataclass(frozen=True)
class DecodeLimits:
    max_pixels: int = 50_000_000
    max_decoded_bytes: int | None = None  # bytes of the decoded picture in its working mode; None: 3 × pixels
    max_scans: int = decode_worker.DEFAULT_MAX_SCANS
    cpu_seconds: float = 10.0  # CPU time one decode may use (RLIMIT_CPU of its process)
    memory_bytes: int = 1024 * 1024 * 1024  # address space one decode may add (RLIMIT_AS of its process)
    wall_seconds: float = 40.0  # then the process is killed, whatever it is doing
    max_processes: int = 4  # decodes at once; more wait (at most wall_seconds) for a free slot
    spare_wait_seconds: float = 2.0  # a decode returns once the next one's worker has started, or after this long


def decode_limits(settings) -> DecodeLimits:  # noqa: ANN001 - server.settings.Settings
    return DecodeLimits(settings.max_image_pixels, settings.max_decoded_bytes, settings.max_jpeg_scans,
                        settings.decode_cpu_seconds, settings.decode_memory_bytes, settings.decode_timeout_s,
                        settings.max_decode_processes, settings.decode_spare_wait_s)


class IsolatedDecoder:
    """Decodes each upload in a fresh child process under :class:`DecodeLimits` (a
    :class:`~server.services.work.child_processes.ChildProcessPool`): callable like ``decode_image``
    (bytes → RGB image), thread-safe, at most ``max_processes`` children at once."""

    def __init__(self, limits: DecodeLimits) -> None:
        self.limits = limits
        # A decode returns once the next upload's worker has started (it says READY): the first views of the
        # new image must not share the cores with a Python start-up.
        self._pool = ChildProcessPool([sys.executable, decode_worker.__file__], limits.max_processes,
                                      limits.wall_seconds, "image decoder", decode_worker.PARENT_ENV,
                                      ready_line=decode_worker.READY, spare_wait_seconds=limits.spare_wait_seconds)

    @property
    def spare_ready(self) -> bool:
        """Whether a worker for the next upload has started and waits."""
        return self._pool.spare_ready

    def close(self) -> None:
        self._pool.close()

    def __call__(self, data: bytes) -> Image.Image:
        # No malloc_trim here (there was one): the pixels were decoded in the child, and a trim after every
        # upload gave the pages of the last forward pass back, so the next one faulted ~2,000 of them in
        # again (+5-10 ms on a fresh upload's first view). The allocator's periodic trim returns them.
        if not data:
            raise ApiError(400, "empty_file", "The uploaded file is empty.")
        return self._decode(data)

    def _decode(self, data: bytes) -> Image.Image:
        limits = self.limits
        header = {"max_pixels": limits.max_pixels, "max_scans": limits.max_scans,
                  "max_decoded_bytes": limits.max_decoded_bytes or limits.max_pixels * 3,
                  "cpu_seconds": limits.cpu_seconds, "memory_bytes": limits.memory_bytes}
        result = self._pool.run(json.dumps(header).encode() + b"\n" + data)
        if result.returncode is None:
            raise _too_costly(f"Decoding the image took more than {limits.wall_seconds:g} s.")
        answer, raw = result.answer()
        if "ok" in answer and result.returncode == 0:
            width, height = (int(v) for v in answer["ok"])
            if 0 < width <= MAX_WORKING_SIDE and 0 < height <= MAX_WORKING_SIDE and len(raw) == width * height * 3:
                return Image.frombytes("RGB", (width, height), raw)
        if result.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
            raise _too_costly(f"Decoding the image took more than {limits.cpu_seconds:g} s of CPU time.")
        raise ApiError(422, "corrupt_image", "The image could not be decoded (the decoder failed on it).")


def _too_costly(message: str) -> ApiError:
    return ApiError(422, "image_too_costly", message + " Re-save it with an ordinary image editor.")
