"""A second, independently written Shapes renderer, used only to *evaluate* tinyvgg-shapes.

The training generator (``shapes.py``) rasterises analytic masks in numpy. This one draws the way a user's
picture would be made: with PIL's ``ImageDraw`` (ellipses, polygons, outlines) on a 4× canvas, shrunk
with a Lanczos filter (its own anti-aliasing); gratings are square-wave stripes clipped to a hard disc
(not sinusoids under a Gaussian envelope); backgrounds are flat, blurred noise ("paper"), or a flat
colour under Gaussian pixel noise. Nothing is shared with ``shapes.py`` but the class names and the
stripe-angle convention (``grating 0°`` has horizontal stripes, angles counter-clockwise on screen).

A model that only learned the training generator's quirks fails here; the tests hold it to this set.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from models.datasets.shapes import CLASSES, SIZE, ShapesBatch

SCALE = 4  # drawn at 256×256, shown at 64×64
_LUMA = (0.299, 0.587, 0.114)


def _luma(rgb: tuple[int, int, int]) -> float:
    return sum(c * w for c, w in zip(rgb, _LUMA)) / 255.0


def _colour_pair(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(background, ink) with at least 0.3 luminance between them."""
    while True:
        bg = tuple(int(v) for v in rng.integers(0, 256, 3))
        ink = tuple(int(v) for v in rng.integers(0, 256, 3))
        if abs(_luma(bg) - _luma(ink)) >= 0.3:  # type: ignore[arg-type]
            return bg, ink  # type: ignore[return-value]


def _background(rng: np.random.Generator, colour: tuple[int, int, int]) -> Image.Image:
    """Flat, "paper" (blurred noise around the colour) or a gentle two-tone ramp drawn line by line."""
    kind = int(rng.integers(0, 3))
    if kind == 0:
        return Image.new("RGB", (SIZE, SIZE), colour)
    if kind == 1:
        paper = Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).filter(ImageFilter.GaussianBlur(3))
        base = np.asarray(colour, dtype=np.float64) + (np.asarray(paper, dtype=np.float64) - 127.5) * 0.5
        return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    ramp = Image.new("RGB", (SIZE, SIZE))
    draw = ImageDraw.Draw(ramp)
    shift = rng.integers(-35, 36, 3)
    vertical = rng.random() < 0.5
    for k in range(SIZE):
        t = k / (SIZE - 1) - 0.5
        tone = tuple(int(np.clip(c + t * d, 0, 255)) for c, d in zip(colour, shift))
        draw.line([(0, k), (SIZE - 1, k)] if vertical else [(k, 0), (k, SIZE - 1)], fill=tone)
    return ramp


def _polygon(cx: float, cy: float, radii: list[float], angles: list[float]) -> list[tuple[float, float]]:
    # screen coordinates: angles counter-clockwise, rows grow downwards
    return [(cx + r * math.cos(a), cy - r * math.sin(a)) for r, a in zip(radii, angles)]


def _draw_shape(draw: ImageDraw.ImageDraw, name: str, cx: float, cy: float, r: float, turn: float,
                outline: bool, width: int) -> None:
    fill, line = (255, 0) if not outline else (None, width)
    if name == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        return
    if name == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=255, width=max(int(r * 0.4), SCALE * 3))
        return
    if name == "square":
        points = _polygon(cx, cy, [r] * 4, [turn + math.pi / 4 + k * math.pi / 2 for k in range(4)])
    elif name == "triangle":
        points = _polygon(cx, cy, [r] * 3, [turn + math.pi / 2 + k * 2 * math.pi / 3 for k in range(3)])
    elif name == "star":
        points = _polygon(cx, cy, [r if k % 2 == 0 else r * 0.42 for k in range(10)],
                          [turn + math.pi / 2 + k * math.pi / 5 for k in range(10)])
    else:  # cross: twelve corners of a plus sign, arms a third as wide as the whole
        a, b = r * 0.9, r * 0.3
        local = [(b, a), (b, b), (a, b), (a, -b), (b, -b), (b, -a), (-b, -a), (-b, -b), (-a, -b), (-a, b), (-b, b), (-b, a)]
        c, s = math.cos(turn), math.sin(turn)
        points = [(cx + x * c - y * s, cy - (x * s + y * c)) for x, y in local]
    if fill is not None:
        draw.polygon(points, fill=fill)
    else:
        draw.line(points + [points[0], points[1]], fill=255, width=line, joint="curve")


def _grating_mask(angle_deg: float, cx: float, cy: float, r: float, period: float, phase: float) -> np.ndarray:
    """Square-wave stripes at ``angle_deg`` inside a hard disc, at 4× resolution (values 0 or 255)."""
    n = SIZE * SCALE
    ys, xs = np.mgrid[0:n, 0:n] + 0.5
    a = math.radians(angle_deg)
    # distance across the stripes: stripes run along (cos a, −sin a) on screen
    across = (xs - cx) * math.sin(a) + (ys - cy) * math.cos(a)
    stripes = np.mod(across / period + phase, 1.0) < 0.5
    disc = (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
    return ((stripes & disc) * 255).astype(np.uint8)


def render(count: int, seed: int = 77) -> ShapesBatch:
    """``count`` images (classes in turn), their labels and boxes (x0, y0, x1, y1; x1/y1 exclusive)."""
    images = np.empty((count, SIZE, SIZE, 3), dtype=np.uint8)
    labels = np.arange(count, dtype=np.int64) % len(CLASSES)
    boxes = np.empty((count, 4), dtype=np.int64)
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        name = CLASSES[int(labels[i])]
        bg_colour, ink = _colour_pair(rng)
        background = _background(rng, bg_colour)
        r = float(rng.uniform(7, 20)) * SCALE
        cx = float(rng.uniform(r + SCALE, SIZE * SCALE - r - SCALE))
        cy = float(rng.uniform(r + SCALE, SIZE * SCALE - r - SCALE))
        if name.startswith("grating"):
            angle = float(name.split()[1].rstrip("°"))
            mask_big = Image.fromarray(_grating_mask(angle, cx, cy, r, float(rng.uniform(4.5, 7)) * SCALE,
                                                     float(rng.random())))
        else:
            mask_big = Image.new("L", (SIZE * SCALE, SIZE * SCALE), 0)
            outline = name in ("square", "triangle", "star", "cross") and rng.random() < 0.3
            _draw_shape(ImageDraw.Draw(mask_big), name, cx, cy, r, float(rng.uniform(0, 2 * math.pi)),
                        outline, int(rng.integers(2, 4)) * SCALE)
        mask = np.asarray(mask_big.resize((SIZE, SIZE), Image.LANCZOS), dtype=np.float64) / 255.0
        mask = np.clip(mask, 0, 1)
        mask[mask < 0.1] = 0.0
        picture = np.asarray(background, dtype=np.float64)
        picture = picture * (1 - mask[..., None]) + np.asarray(ink, dtype=np.float64) * mask[..., None]
        sigma = float(rng.choice([0.0, 4.0, 10.0, 18.0]))
        if sigma:
            picture += rng.normal(0.0, sigma, picture.shape)
        images[i] = np.clip(picture + 0.5, 0, 255).astype(np.uint8)
        rows, cols = np.nonzero(mask > 0)
        boxes[i] = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    return ShapesBatch(images=images, labels=labels, boxes=boxes)
