"""Learned filters as pictures: a conv layer's kernels in a grid, and a histogram of a layer's weights.

A first layer that reads 3 channels (RGB) shows each kernel as a small colour image, normalised on its own
(as in the AlexNet and ZFNet figures), so its colour and orientation preferences show. Any other conv
layer shows each kernel as one slice per input channel — rows are output channels, columns input channels —
in the diverging map on one symmetric scale for the whole layer, so white is zero and slices compare.
Large layers (VGG's 512×512) are shown a page at a time: at most 64 output × 64 input channels per picture.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from server.services.rendering.atlas import EPS, LEGEND_STOPS
from server.services.rendering.colormaps import DEFAULT_DIVERGING, apply_colormap, colormap_stops

MAX_OUT_PER_PAGE = 64
MAX_IN_PER_PAGE = 64
GAP = 1  # pixels of background between kernels
BACKGROUND = (255, 255, 255)
PNG_COMPRESS_LEVEL = 1


class FilterRequestError(ValueError):
    """The requested page or layer cannot be drawn; the message is a sentence for a person."""


@dataclass(frozen=True)
class KernelPage:
    mode: str  # "rgb" | "slices"
    out_start: int
    out_count: int
    in_start: int
    in_count: int
    out_total: int
    in_total: int


def kernel_page(weight_shape: tuple[int, ...], out_start: int = 0, out_count: int | None = None,
                in_start: int = 0, in_count: int | None = None) -> KernelPage:
    """Which kernels a picture shows: the whole layer when it fits, else a page of it."""
    if len(weight_shape) != 4:
        raise FilterRequestError("kernel pictures need a 2-D convolution's O×I×kh×kw weights")
    out_total, in_total = int(weight_shape[0]), int(weight_shape[1])
    mode = "rgb" if in_total == 3 else "slices"
    if not 0 <= out_start < out_total:
        raise FilterRequestError(f"out_start must be between 0 and {out_total - 1}")
    out_max = MAX_OUT_PER_PAGE if mode == "slices" else 256
    out_count = min(out_max, out_total - out_start) if out_count is None else out_count
    if not 1 <= out_count <= min(out_max, out_total - out_start):
        raise FilterRequestError(f"out_count must be between 1 and {min(out_max, out_total - out_start)}")
    if mode == "rgb":
        in_start, in_count = 0, 3
    else:
        if not 0 <= in_start < in_total:
            raise FilterRequestError(f"in_start must be between 0 and {in_total - 1}")
        in_count = min(MAX_IN_PER_PAGE, in_total - in_start) if in_count is None else in_count
        if not 1 <= in_count <= min(MAX_IN_PER_PAGE, in_total - in_start):
            raise FilterRequestError(f"in_count must be between 1 and {min(MAX_IN_PER_PAGE, in_total - in_start)}")
    return KernelPage(mode, out_start, out_count, in_start, in_count, out_total, in_total)


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def _canvas(rows: int, cols: int, kh: int, kw: int) -> np.ndarray:
    height = rows * kh + (rows - 1) * GAP
    width = cols * kw + (cols - 1) * GAP
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = BACKGROUND
    return canvas


def kernel_atlas(weight: np.ndarray, page: KernelPage) -> tuple[bytes, dict[str, Any]]:
    """The page's kernels as one PNG and the geometry and scale the page needs to label it."""
    w = np.asarray(weight, dtype=np.float32)
    _, _, kh, kw = w.shape
    kernels = w[page.out_start:page.out_start + page.out_count]
    meta: dict[str, Any] = {
        "mode": page.mode,
        "kernel": {"height": int(kh), "width": int(kw)},
        "gap": GAP,
        "out": {"start": page.out_start, "count": page.out_count, "total": page.out_total},
        "in": {"start": page.in_start, "count": page.in_count, "total": page.in_total},
        "truncated": page.out_count < page.out_total or page.in_count < page.in_total,
    }
    if page.mode == "rgb":
        cols = max(1, math.ceil(math.sqrt(page.out_count)))
        rows = math.ceil(page.out_count / cols)
        canvas = _canvas(rows, cols, kh, kw)
        lows, highs = [], []
        for i, kernel in enumerate(kernels):
            lo, hi = float(kernel.min()), float(kernel.max())
            unit = (kernel - lo) / (hi - lo) if hi - lo > EPS else np.full_like(kernel, 0.5)
            r, c = divmod(i, cols)
            y, x = r * (kh + GAP), c * (kw + GAP)
            canvas[y:y + kh, x:x + kw] = np.rint(unit.transpose(1, 2, 0) * 255.0).astype(np.uint8)
            lows.append(lo)
            highs.append(hi)
        meta.update(grid={"columns": cols, "rows": rows}, scale="kernel",
                    kernels={"low": lows, "high": highs},
                    order="row-major: output channel out.start + i is at column i % columns, row i // columns")
    else:
        m = float(np.abs(w).max())  # the whole layer's scale, so every page uses the same colours
        block = kernels[:, page.in_start:page.in_start + page.in_count]
        unit = 0.5 + block / (2.0 * m) if m > EPS else np.full_like(block, 0.5)
        rgb = apply_colormap(unit, DEFAULT_DIVERGING)  # out × in × kh × kw × 3
        rows, cols = page.out_count, page.in_count
        canvas = _canvas(rows, cols, kh, kw)
        for r in range(rows):
            y = r * (kh + GAP)
            for c in range(cols):
                x = c * (kw + GAP)
                canvas[y:y + kh, x:x + kw] = rgb[r, c]
        meta.update(grid={"columns": cols, "rows": rows}, scale="layer", colormap=DEFAULT_DIVERGING,
                    range=[-m, m], stops=colormap_stops(DEFAULT_DIVERGING, LEGEND_STOPS),
                    order="row r: output channel out.start + r; column c: input channel in.start + c")
    meta["image"] = {"height": int(canvas.shape[0]), "width": int(canvas.shape[1])}
    return _png(canvas), meta


def weight_histogram(weight: np.ndarray, bins: int = 50) -> dict[str, Any]:
    """Counts and bin edges of every weight of a layer, with its summary statistics."""
    values = np.asarray(weight, dtype=np.float64).ravel()
    if values.size == 0:
        raise FilterRequestError("the layer has no weights")
    counts, edges = np.histogram(values, bins=bins)
    return {
        "counts": counts.astype(int).tolist(),
        "edges": edges.astype(np.float32).tolist(),
        "count": int(values.size),
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "zero_fraction": float((values == 0).mean()),
    }
