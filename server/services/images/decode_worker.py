"""The image decoder itself, and the worker process that runs it under hard limits.

This module imports only the standard library and Pillow (NumPy only for 16-bit and float pictures; not torch,
not the server), so the worker process that runs it starts in a few hundredths of a second of CPU.
:mod:`server.services.images.decode` calls it in-process for tests and in a fresh child process for every upload
(``python decode_worker.py``):

- before any pixel is decoded, the header is checked: pixel count, the bytes the decoded picture will
  really take in memory (a palette with transparency becomes four bytes per pixel, not one), and for JPEG
  the number of scans (a progressive JPEG with thousands of empty scans costs seconds of CPU per thousand);
- the child sets its own CPU-time limit (``RLIMIT_CPU``) and address-space limit (``RLIMIT_AS``) before it
  reads the upload, and the parent kills it after a wall-clock timeout: a file crafted to cost more is
  stopped, whatever the decoder does;
- every byte the decode used is given back to the system when the child exits, so large or crafted files
  never grow the server's own memory;
- the child dies with the server: the kernel kills it when its parent dies (Linux ``PR_SET_PDEATHSIG``),
  and a watcher thread ends it when it finds itself adopted by another process (elsewhere), so a
  ``kill -9`` of the server leaves no decoder behind.

Protocol (stdin → stdout): the worker first says ``ready`` (one line, once started); then it reads one JSON line of
limits, then the upload's bytes; the answer is one JSON line
(``{"ok": [width, height]}`` or ``{"error": [status, code, message]}``), then, on success, the RGB bytes.
"""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

READABLE_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")
MAX_WORKING_SIDE = 2048  # stored working copies are at most this long; every model input is far smaller
DEFAULT_MAX_SCANS = 100  # libjpeg's own progressions use ~10 scans; 100 leaves room for any real encoder

# Leading bytes of the formats we read: a file that starts like one of them but does not open is a damaged
# image (422), anything else is not an image at all (415).
_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (0, b"\x89PNG\r\n\x1a\n"),
    (0, b"\xff\xd8\xff"),
    (0, b"GIF87a"),
    (0, b"GIF89a"),
    (8, b"WEBP"),
    (0, b"BM"),
    (0, b"II*\x00"),
    (0, b"MM\x00*"),
)

# Pillow warns (rather than refuses) between its two bomb limits; for a server that is a refusal. Set once
# for the process: ``warnings.catch_warnings`` per call would race between request threads.
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


class DecodeError(Exception):
    """A client error found while decoding: HTTP status, error code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def looks_like_image(data: bytes) -> bool:
    """Whether ``data`` starts with the signature of a format we read."""
    return any(data[offset : offset + len(magic)] == magic for offset, magic in _SIGNATURES)


def decoded_bytes_per_pixel(image: Image.Image) -> int:
    """Bytes a decode writes per pixel of the decoded picture: the file's mode as Pillow holds it (1 for
    1-bit, grey and palette, 2 for 16-bit, 4 for colour and alpha), plus the full-size copy the pipeline
    makes before it can shrink the picture (1-bit becomes grey: +1; palette, 16-bit and 32-bit modes become
    RGB: +4). Both the decode's memory and its
    CPU time grow with it (measured in ``bench/bench_decode_cost.py``)."""
    mode = image.mode
    held = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    if mode == "1":
        return held + 1
    if mode in ("P", "I", "F") or mode.startswith("I;16"):
        return held + 4
    return held


def decoded_size(image: Image.Image) -> tuple[int, int]:
    """The size the decoder really produces: a JPEG is decoded at 1/2, 1/4 or 1/8 scale when the working
    copy is smaller anyway (``draft``); every other format at full size."""
    if image.format != "JPEG":
        return image.size
    width, height = image.size
    scale = 1
    while scale < 8 and width // (scale * 2) >= MAX_WORKING_SIDE and height // (scale * 2) >= MAX_WORKING_SIDE:
        scale *= 2
    return -(-width // scale), -(-height // scale)


def jpeg_scans(data: bytes) -> int:
    """How many scans (SOS markers) a JPEG has. In entropy-coded data 0xFF is always followed by 0x00 or a
    restart marker, so every 0xFFDA is a real start-of-scan (of the picture, or of an embedded thumbnail)."""
    return data.count(b"\xff\xda")


def decode_image(data: bytes, max_pixels: int, max_decoded_bytes: int | None = None,
                 max_scans: int = DEFAULT_MAX_SCANS) -> Image.Image:
    """Decode ``data`` into an upright RGB image no larger than MAX_WORKING_SIDE on its longer side, or raise
    :class:`DecodeError`: 400 ``empty_file``; 415 ``unsupported_media_type`` (not an image we read); 422
    ``corrupt_image`` (an image's signature, but damaged); 413 ``image_too_large`` (too many pixels, or
    too many bytes once decoded, judged from the header); 422 ``image_too_costly`` (too many JPEG scans)."""
    if not data:
        raise DecodeError(400, "empty_file", "The uploaded file is empty.")
    max_decoded_bytes = max_pixels * 3 if max_decoded_bytes is None else max_decoded_bytes
    try:
        image = Image.open(io.BytesIO(data), formats=READABLE_FORMATS)
        width, height = image.size
        if width * height > max_pixels:
            raise _too_many_pixels((width, height), max_pixels)
        if width < 1 or height < 1:
            raise DecodeError(422, "corrupt_image", "The image has no pixels.")
        per_pixel = decoded_bytes_per_pixel(image)
        decoded_w, decoded_h = decoded_size(image)
        if decoded_w * decoded_h * per_pixel > max_decoded_bytes:
            scaled = f" (decoded at {decoded_w}×{decoded_h})" if (decoded_w, decoded_h) != (width, height) else ""
            raise _too_large(f"The image is {width}×{height} pixels{scaled} in mode {image.mode}, {per_pixel} bytes "
                             f"each to decode: more than the {max_decoded_bytes / 2**20:.0f} MB of work one decode "
                             "may take.")
        if image.format == "JPEG" and (scans := jpeg_scans(data)) > max_scans:
            raise DecodeError(422, "image_too_costly", f"The JPEG has {scans} scans; at most {max_scans} are "
                              "decoded (real encoders use about ten).")
        return _decode_opened(image)
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow refuses past its own limit (89.5 MP) inside open(), before we see the size: the same
        # sentence as any picture over our limit, never Pillow's "decompression bomb DOS attack" text.
        raise _too_many_pixels(header_size(data), max_pixels) from exc
    except MemoryError as exc:
        raise _too_large("The image is too large to decode in the memory a decode may take.") from exc
    except UnidentifiedImageError as exc:
        if looks_like_image(data):
            raise DecodeError(422, "corrupt_image", "The file starts like an image but is damaged or truncated.") from exc
        raise DecodeError(
            415,
            "unsupported_media_type",
            "The file is not an image we can read; upload a PNG, JPEG, GIF, WebP, BMP or TIFF.",
        ) from exc
    except Exception as exc:  # decoders fail in many ways (OSError, SyntaxError, struct.error…): all mean damage
        raise DecodeError(422, "corrupt_image", f"The image file is damaged or truncated ({exc}).") from exc


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as the file's header states it, read by Pillow's registered opener for the format
    (which parses the header only, without ``Image.open``'s bomb check); None when no opener accepts it."""
    Image.preinit()
    for fmt in READABLE_FORMATS:
        factory, accept = Image.OPEN[fmt]
        try:
            if accept is not None and not accept(data[:16]):
                continue
            with factory(io.BytesIO(data), None) as image:
                return image.size
        except Exception:  # noqa: BLE001 (a damaged header: say what we can without the size)
            continue
    return None


def _too_many_pixels(size: tuple[int, int] | None, max_pixels: int) -> DecodeError:
    if size is None:
        return _too_large(f"The image has more pixels than the limit of {max_pixels:,} pixels in all.")
    if size[0] * size[1] <= max_pixels:  # a limit set above Pillow's: Pillow's is the one that holds
        return _too_large(f"The image is {size[0]}×{size[1]} pixels; the limit is "
                          f"{min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels):,} pixels in all.")
    return _too_large(f"The image is {size[0]}×{size[1]} pixels; the limit is {max_pixels:,} pixels in all.")


def _decode_opened(image: Image.Image) -> Image.Image:
    image.seek(0)  # animated GIF/WebP, multi-page TIFF: the first frame
    # JPEG can decode at 1/2, 1/4 or 1/8 scale directly: no need to hold the full photo when the working
    # copy is at most MAX_WORKING_SIDE anyway (draft never goes below the requested size).
    image.draft("RGB", (MAX_WORKING_SIDE, MAX_WORKING_SIDE))
    image.load()
    ImageOps.exif_transpose(image, in_place=True)
    if image.mode == "1":
        image = image.convert("L")  # 1-bit shrinks as grey (one byte a pixel), not as full-size RGB
    if image.mode != "P" and not image.mode.startswith("I;16"):
        # Shrink first, in the file's own mode (Pillow premultiplies alpha while resampling): the colour
        # conversions below then touch at most MAX_WORKING_SIDE² pixels instead of the whole photo.
        image.thumbnail((MAX_WORKING_SIDE, MAX_WORKING_SIDE), Image.LANCZOS)
    rgb = _to_rgb(image)
    rgb.thumbnail((MAX_WORKING_SIDE, MAX_WORKING_SIDE), Image.LANCZOS)  # modes that could not shrink before
    return rgb


def _too_large(message: str) -> DecodeError:
    return DecodeError(413, "image_too_large", message)


def _palette_over_white(image: Image.Image) -> Image.Image:
    """A palette picture with transparency, composited on white *in its palette* (256 entries, not millions
    of pixels) and expanded straight to RGB: no full-size RGBA copies."""
    palette = image.getpalette("RGB") or []
    palette = (palette + [0] * 768)[:768]
    alphas = [255] * 256
    transparency = image.info.get("transparency")
    if isinstance(transparency, int) and 0 <= transparency < 256:
        alphas[transparency] = 0
    elif isinstance(transparency, (bytes, bytearray)):
        for index, alpha in enumerate(transparency[:256]):
            alphas[index] = alpha
    flat = image.copy()
    flat.info.pop("transparency", None)
    flat.putpalette([(c * alphas[i // 3] + 255 * (255 - alphas[i // 3]) + 127) // 255 for i, c in enumerate(palette)])
    return flat.convert("RGB")


def _wide_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer or float samples, to 8 bits. NumPy is imported here, not at the top: these modes
    are rare, and every upload's worker process starts sooner without it (a fraction of a second of CPU that the
    server's first requests on the new image would otherwise share the cores with)."""
    import numpy as np

    mode = image.mode
    if mode.startswith("I;16"):
        # The high byte of each 16-bit sample is its 8-bit value (0 → 0, 65535 → 255), without float copies.
        arr = np.asarray(image.convert("I;16") if mode != "I;16" else image)
        return Image.fromarray((arr >> 8).astype(np.uint8)).convert("RGB")
    arr = np.asarray(image, dtype=np.float32)  # "I" or "F"
    lo, hi = min(float(arr.min()), 0.0), max(float(arr.max()), 1.0)
    if mode == "I" and hi <= 65535 and lo >= 0:
        hi = 65535.0 if hi > 255 else 255.0
    scaled = np.clip((arr - lo) / max(hi - lo, 1e-12) * 255.0, 0, 255).round().astype(np.uint8)
    return Image.fromarray(scaled).convert("RGB")


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _wide_to_rgb(image)
    if mode == "P":
        if "transparency" not in image.info:
            return image.convert("RGB")
        if image.palette is not None and image.palette.mode == "RGB":
            return _palette_over_white(image)
        image = image.convert("RGBA")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels become white, as they look on a page.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


# --- the worker process ------------------------------------------------------------------------------------

def set_limits(cpu_seconds: float, memory_bytes: int) -> None:
    """Hard limits for this process: CPU seconds (SIGXCPU, then SIGKILL) and address space above what is
    mapped now. Where a limit is not available (no ``resource`` module), the parent's wall-clock timeout is."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return
    cpu = max(1, int(cpu_seconds + 0.999))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    try:
        with open("/proc/self/statm") as statm:
            mapped = int(statm.read().split()[0]) * resource.getpagesize()
    except OSError:
        mapped = 512 * 1024 * 1024
    try:
        limit = mapped + memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError):  # pragma: no cover - e.g. macOS refuses RLIMIT_AS
        pass


PARENT_ENV = "CONVSCOPE_DECODE_PARENT"  # the server's pid, which the child must outlive by no more than a moment
PR_SET_PDEATHSIG = 1


def die_with_server() -> None:
    """What every limited child does first (image decoders, model converters): die with the server whose pid
    the pool put in ``PARENT_ENV``."""
    parent = os.environ.get(PARENT_ENV, "")
    if parent.isdigit():
        _die_with_parent(int(parent))


def _die_with_parent(parent: int) -> None:
    """Ask the kernel for SIGKILL when the parent dies; and, where that is not available or the parent died
    before it was asked, exit as soon as this process's parent is no longer ``parent``."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl: the watcher below remains
            pass
    if os.getppid() != parent:
        os._exit(1)  # the server died before the signal was asked for

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.25)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


READY = b"ready\n"  # the worker's first line: its imports are done, it waits for an upload


def _main() -> int:
    die_with_server()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(READY)
    stdout.flush()
    limits = json.loads(stdin.readline())
    set_limits(limits["cpu_seconds"], limits["memory_bytes"])
    data = stdin.read()
    try:
        image = decode_image(data, limits["max_pixels"], limits["max_decoded_bytes"], limits["max_scans"])
        raw = image.tobytes()
    except DecodeError as exc:
        stdout.write(json.dumps({"error": [exc.status, exc.code, exc.message]}).encode() + b"\n")
        return 0
    stdout.write(json.dumps({"ok": [image.width, image.height]}).encode() + b"\n")
    stdout.write(raw)
    stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
