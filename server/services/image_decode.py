"""Turn uploaded bytes into an upright RGB picture, or a clear client error.

Handles the odd files students own: EXIF rotation, CMYK, 16-bit and 1-bit, palette with transparency,
alpha, animated GIF/WebP (first frame), and refuses empties, non-images, truncated files and
decompression bombs before they cost memory.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from server.errors import ApiError

READABLE_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")
MAX_WORKING_SIDE = 2048  # stored working copies are at most this long; every model input is far smaller


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode ``data`` into an upright RGB image no larger than MAX_WORKING_SIDE on its longer side."""
    if not data:
        raise ApiError(400, "empty_file", "The uploaded file is empty.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=READABLE_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise ApiError(
                    413,
                    "image_too_large",
                    f"The image is {width}×{height} pixels; the limit is {max_pixels:,} pixels in all.",
                )
            if width < 1 or height < 1:
                raise ApiError(422, "corrupt_image", "The image has no pixels.")
            image.seek(0)  # animated GIF/WebP: the first frame
            image.load()
            image = ImageOps.exif_transpose(image) or image
            rgb = _to_rgb(image)
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ApiError(413, "image_too_large", f"The image is too large to decode safely ({exc}).") from exc
    except UnidentifiedImageError as exc:
        raise ApiError(
            415,
            "unsupported_media_type",
            "The file is not an image we can read; upload a PNG, JPEG, GIF, WebP, BMP or TIFF.",
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        raise ApiError(422, "corrupt_image", f"The image file is damaged or truncated ({exc}).") from exc
    rgb.thumbnail((MAX_WORKING_SIDE, MAX_WORKING_SIDE), Image.LANCZOS)
    return rgb


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else max(float(arr.max()), 1.0)
        lo = 0.0 if mode.startswith("I;16") else min(float(arr.min()), 0.0)
        scaled = np.clip((arr - lo) / max(top - lo, 1e-12) * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels become white, as they look on a page.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
