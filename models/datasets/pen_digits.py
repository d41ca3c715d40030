"""Synthetic pen-drawn digits, as the drawing pad makes them: white strokes of the pad's brush (22 px) on a
black 280×280 canvas, each digit a hand-written skeleton of polylines, drawn at a random size (60–240 px
tall), place, slant and wobble. Used to measure how well the MNIST models read mouse drawings (MNIST's
own digits were size-normalised into 20×20 and centred by mass in 28×28; a raw canvas is not).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

CANVAS = 280
BRUSH = 22  # frontend/static/js/shell/drawing-canvas.js BRUSH_WIDTH


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float, steps: int = 16) -> list[tuple[float, float]]:
    """Points on an ellipse from ``start`` to ``end`` degrees (0° = right, 90° = down, as on screen)."""
    return [(cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
            for a in np.linspace(start, end, steps)]


# Skeletons in a 0.6 × 1.0 box (x right, y down): one list of polylines per digit.
SKELETONS: dict[int, list[list[tuple[float, float]]]] = {
    0: [_arc(0.3, 0.5, 0.27, 0.48, 0, 360, 28)],
    1: [[(0.22, 0.12), (0.34, 0.0), (0.34, 1.0)]],
    2: [_arc(0.3, 0.27, 0.26, 0.25, 190, 370) + [(0.05, 1.0), (0.6, 1.0)]],
    3: [_arc(0.28, 0.25, 0.26, 0.24, 200, 450), _arc(0.28, 0.72, 0.3, 0.27, 270, 520)],
    4: [[(0.47, 1.0), (0.47, 0.0), (0.0, 0.68), (0.6, 0.68)]],
    5: [[(0.56, 0.0), (0.1, 0.0), (0.06, 0.44)] + _arc(0.3, 0.68, 0.28, 0.3, 220, 500)[2:]],
    6: [[(0.5, 0.0), (0.22, 0.3)] + _arc(0.3, 0.72, 0.26, 0.27, 200, 560)],
    7: [[(0.0, 0.02), (0.6, 0.0), (0.22, 1.0)]],
    8: [_arc(0.3, 0.25, 0.22, 0.24, 90, 450), _arc(0.3, 0.74, 0.28, 0.26, -90, 270)],
    9: [_arc(0.3, 0.28, 0.26, 0.27, 0, 360), [(0.56, 0.28), (0.5, 1.0)]],
}


def draw(digit: int, rng: np.random.Generator) -> Image.Image:
    """One digit as the pad would export it (RGB, 280×280)."""
    height = float(rng.uniform(60, 240))
    scale = height
    width = 0.6 * scale
    x0 = float(rng.uniform(BRUSH, CANVAS - width - BRUSH)) if CANVAS - width - 2 * BRUSH > 0 else (CANVAS - width) / 2
    y0 = float(rng.uniform(BRUSH / 2, CANVAS - height - BRUSH / 2))
    slant = math.radians(float(rng.uniform(-12, 12)))
    canvas = Image.new("RGB", (CANVAS, CANVAS), (0, 0, 0))
    pen = ImageDraw.Draw(canvas)
    for stroke in SKELETONS[digit]:
        points = []
        for x, y in stroke:
            wobble = rng.normal(0.0, 0.012, 2)
            sx, sy = (x + wobble[0]) * scale, (y + wobble[1]) * scale
            # slant about the digit's centre (shear-like rotation), then place it
            cx, cy = sx - width / 2, sy - height / 2
            rx = cx * math.cos(slant) - cy * math.sin(slant) + width / 2
            ry = cx * math.sin(slant) + cy * math.cos(slant) + height / 2
            points.append((x0 + rx, y0 + ry))
        pen.line(points, fill=(255, 255, 255), width=BRUSH, joint="curve")
        for px, py in (points[0], points[-1]):  # round caps, as the pad's lineCap = 'round'
            pen.ellipse((px - BRUSH / 2, py - BRUSH / 2, px + BRUSH / 2, py + BRUSH / 2), fill=(255, 255, 255))
    return canvas


def pen_digits(count: int, seed: int = 5) -> tuple[list[Image.Image], np.ndarray]:
    """``count`` drawings (digits in turn) and their labels."""
    labels = np.arange(count) % 10
    images = [draw(int(d), np.random.default_rng([seed, i])) for i, d in enumerate(labels)]
    return images, labels
