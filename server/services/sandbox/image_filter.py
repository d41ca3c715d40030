"""A kernel applied to a whole uploaded picture (e.g. Sobel on a photo), and small crops for the sandbox.

The picture is converted to grey luminance in [0, 1] and, when large, shrunk so its longer side is at most
``MAX_SIDE`` pixels (a lecture-hall projector shows no more, and the work stays small). The result is a
PNG in a colour map whose range is returned with it, so the page can draw an honest legend: a diverging
map centred on zero when the output has both signs, grey from min to max otherwise.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from server.errors import ApiError
from server.services.rendering.colormaps import apply_colormap, colormap_stops
from server.services.step_through import window_math as wm

MAX_SIDE = 512
MAX_CROP = 16


@dataclass(frozen=True)
class FilteredImage:
    values: np.ndarray  # float32 H×W, the convolution output
    png: bytes
    vmin: float  # the colour map's range: the legend's end values
    vmax: float
    colormap: str

    def legend(self) -> dict[str, Any]:
        return {"min": self.vmin, "max": self.vmax, "colormap": self.colormap, "stops": colormap_stops(self.colormap)}


def grey(image: Image.Image, max_side: int = MAX_SIDE) -> np.ndarray:
    """Luminance in [0, 1] (ITU-R 601, as PIL's 'L' mode), shrunk to ``max_side`` on its longer side."""
    picture = ImageOps.grayscale(image)
    if max(picture.size) > max_side:
        scale = max_side / max(picture.size)
        picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                                 Image.BILINEAR)
    return np.asarray(picture, dtype=np.float32) / 255.0


def filter_grey(values: np.ndarray, kernel: list[list[float]], padding: Any = "same", stride: int = 1,
                dilation: int = 1, mode: str = "cross-correlation") -> np.ndarray:
    """The convolution of a grey picture with ``kernel`` (float32), padding resolved by the window math."""
    k = np.asarray(kernel, dtype=np.float32)
    if mode == "convolution":
        k = k[::-1, ::-1].copy()
    try:
        window = wm.window2d(values.shape, k.shape, stride=stride, padding=padding, dilation=dilation)
    except wm.WindowError as exc:
        raise ApiError(422, "invalid_window", str(exc)) from None
    if 0 in window.out_shape:
        raise ApiError(422, "empty_output", window.tiling_message() or "These settings give no output.")
    pads = window.padding()
    x = torch.from_numpy(values)[None, None]
    x = F.pad(x, (pads["left"], pads["right"], pads["top"], pads["bottom"]))
    with torch.no_grad():
        out = F.conv2d(x, torch.from_numpy(k)[None, None], stride=stride, dilation=dilation)
    return out[0, 0].numpy()


def render(values: np.ndarray) -> FilteredImage:
    """A PNG of ``values`` with the range its legend must show."""
    lo, hi = float(values.min()), float(values.max())
    if lo < 0 < hi or (lo < 0 and hi <= 0):
        bound = max(abs(lo), abs(hi), 1e-12)
        name, vmin, vmax = "diverging", -bound, bound
        scaled = (values / bound + 1.0) / 2.0
    else:
        name, vmin, vmax = "gray", lo, hi
        scaled = (values - lo) / max(hi - lo, 1e-12)
    rgb = apply_colormap(scaled, name)
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG")
    return FilteredImage(values, buf.getvalue(), vmin, vmax, name)


def filter_image(image: Image.Image, kernel: list[list[float]], padding: Any = "same", stride: int = 1,
                 dilation: int = 1, mode: str = "cross-correlation") -> FilteredImage:
    """Grey picture → convolution → coloured PNG and legend range."""
    return render(filter_grey(grey(image), kernel, padding, stride, dilation, mode))


def crop(image: Image.Image, size: int, fit: int, cy: float | None = None, cx: float | None = None) -> dict[str, Any]:
    """A ``size``×``size`` grey crop (values 0–1, two decimals) of the picture shrunk to ``fit`` pixels on its
    longer side, centred at fractional position (cy, cx) ∈ [0, 1] (default: the centre)."""
    if not 2 <= size <= MAX_CROP:
        raise ApiError(422, "invalid_size", f"size must be between 2 and {MAX_CROP}.")
    small = grey(image, max_side=max(fit, size))
    h, w = small.shape
    if h < size or w < size:
        raise ApiError(422, "image_too_small", f"The picture is {w}×{h} after shrinking; a {size}×{size} crop does not fit.")
    top = int(round((0.5 if cy is None else cy) * h - size / 2))
    left = int(round((0.5 if cx is None else cx) * w - size / 2))
    top, left = min(max(top, 0), h - size), min(max(left, 0), w - size)
    patch = np.round(small[top:top + size, left:left + size].astype(np.float64), 2)
    return {"input": patch.tolist(), "top": top, "left": left, "scaled_size": [h, w]}
