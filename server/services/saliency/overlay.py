"""Saliency maps as pictures: the colour-mapped map blended over what the model sees."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from server.errors import ApiError
from server.services.rendering.colormaps import COLORMAPS, apply_colormap, colormap_stops

DEFAULT_COLORMAP = "viridis"


def check_colormap(name: str) -> str:
    if name not in COLORMAPS:
        raise ApiError(
            422, "unknown_colormap", f"There is no colour map {name!r}; choose one of {', '.join(COLORMAPS)}."
        )
    return name


def overlay_png(values: np.ndarray, picture: Image.Image, colormap: str, opacity: float) -> bytes:
    """PNG of ``(1 − opacity) · picture + opacity · colormap(values)``; opacity 1 gives the map alone.

    ``values`` is H×W in [0, 1]; ``picture`` is resized to H×W when it differs.
    """
    heat = apply_colormap(values, check_colormap(colormap)).astype(np.float32)
    height, width = values.shape
    base = picture.convert("RGB")
    if base.size != (width, height):
        base = base.resize((width, height), Image.BILINEAR)
    blended = (1.0 - opacity) * np.asarray(base, dtype=np.float32) + opacity * heat
    buf = io.BytesIO()
    Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8), mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def legend(colormap: str, stops: int = 11) -> dict[str, object]:
    """What the page needs to draw the legend with the server's own colours."""
    return {"colormap": check_colormap(colormap), "stops": colormap_stops(colormap, stops)}
