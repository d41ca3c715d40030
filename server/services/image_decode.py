"""Turn uploaded bytes into an upright RGB picture, or a clear client error.

Handles the odd files students own: EXIF rotation, CMYK, 16-bit and 1-bit, palette with transparency,
alpha, animated GIF/WebP (first frame), and refuses empties, non-images, truncated files and
decompression bombs before they cost memory.

Error codes: 400 ``empty_file``; 415 ``unsupported_media_type`` (not an image we read); 422
``corrupt_image`` (an image format's signature, but damaged or truncated); 413 ``image_too_large``
(more pixels than allowed, judged from the header before any pixel is decoded).
"""

from __future__ import annotations

import io
import threading
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from server.errors import ApiError

READABLE_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")
MAX_WORKING_SIDE = 2048  # stored working copies are at most this long; every model input is far smaller

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

# Pictures above this many pixels decode a few at a time: each can cost hundreds of MB while decoding,
# and a class uploading phone photos at once must not add those up.
LARGE_PIXELS = 4_000_000
_large_decodes = threading.BoundedSemaphore(2)

# Pillow warns (rather than refuses) between its two bomb limits; for a server that is a refusal. Set once
# for the process: ``warnings.catch_warnings`` per call would race between request threads.
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def looks_like_image(data: bytes) -> bool:
    """Whether ``data`` starts with the signature of a format we read."""
    return any(data[offset : offset + len(magic)] == magic for offset, magic in _SIGNATURES)


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode ``data`` into an upright RGB image no larger than MAX_WORKING_SIDE on its longer side."""
    if not data:
        raise ApiError(400, "empty_file", "The uploaded file is empty.")
    try:
        image = Image.open(io.BytesIO(data), formats=READABLE_FORMATS)
        width, height = image.size
        if width * height > max_pixels:
            raise _too_large(f"The image is {width}×{height} pixels; the limit is {max_pixels:,} pixels in all.")
        if width < 1 or height < 1:
            raise ApiError(422, "corrupt_image", "The image has no pixels.")
        if width * height > LARGE_PIXELS:
            with _large_decodes:
                return _decode_opened(image)
        return _decode_opened(image)
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_large(f"The image is too large to decode safely ({exc}).") from exc
    except MemoryError as exc:
        raise _too_large("The image is too large to decode in the memory this server has.") from exc
    except UnidentifiedImageError as exc:
        if looks_like_image(data):
            raise ApiError(422, "corrupt_image", "The file starts like an image but is damaged or truncated.") from exc
        raise ApiError(
            415,
            "unsupported_media_type",
            "The file is not an image we can read; upload a PNG, JPEG, GIF, WebP, BMP or TIFF.",
        ) from exc
    except Exception as exc:  # decoders fail in many ways (OSError, SyntaxError, struct.error…): all mean damage
        raise ApiError(422, "corrupt_image", f"The image file is damaged or truncated ({exc}).") from exc


def _decode_opened(image: Image.Image) -> Image.Image:
    image.seek(0)  # animated GIF/WebP, multi-page TIFF: the first frame
    # JPEG can decode at 1/2, 1/4 or 1/8 scale directly: no need to hold the full photo when the working
    # copy is at most MAX_WORKING_SIDE anyway (draft never goes below the requested size).
    image.draft("RGB", (MAX_WORKING_SIDE, MAX_WORKING_SIDE))
    image.load()
    ImageOps.exif_transpose(image, in_place=True)
    if image.mode not in ("1", "P") and not image.mode.startswith("I;16"):
        # Shrink first, in the file's own mode (Pillow premultiplies alpha while resampling): the colour
        # conversions below then touch at most MAX_WORKING_SIDE² pixels instead of the whole photo.
        image.thumbnail((MAX_WORKING_SIDE, MAX_WORKING_SIDE), Image.LANCZOS)
    rgb = _to_rgb(image)
    rgb.thumbnail((MAX_WORKING_SIDE, MAX_WORKING_SIDE), Image.LANCZOS)  # modes that could not shrink before
    return rgb


def _too_large(message: str) -> ApiError:
    return ApiError(413, "image_too_large", message)


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode.startswith("I;16"):
        # The high byte of each 16-bit sample is its 8-bit value (0 → 0, 65535 → 255), without float copies.
        arr = np.asarray(image.convert("I;16") if mode != "I;16" else image)
        return Image.fromarray((arr >> 8).astype(np.uint8)).convert("RGB")
    if mode in ("I", "F"):
        arr = np.asarray(image, dtype=np.float32)
        lo, hi = min(float(arr.min()), 0.0), max(float(arr.max()), 1.0)
        if mode == "I" and hi <= 65535 and lo >= 0:
            hi = 65535.0 if hi > 255 else 255.0
        scaled = np.clip((arr - lo) / max(hi - lo, 1e-12) * 255.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(scaled).convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels become white, as they look on a page.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
