"""Shapes: a synthetic 64×64 RGB dataset of coloured shapes and oriented gratings with bounding boxes.

Every sample is a function of ``(seed, index)`` alone: its parameters come from its own
``numpy.random.Generator`` seeded with ``[seed, index]``, so ``generate(n, seed)`` is deterministic,
its prefixes agree, and :func:`sample` returns exactly the ``index``-th image of a split without
generating the ones before it. Rasterisation is vectorised over a chunk of samples (no per-pixel
Python), so tens of thousands of images take seconds.

Geometry: pixel ``(row y, column x)`` covers ``[x, x+1) × [y, y+1)`` and is sampled at its centre.
A box is ``(x0, y0, x1, y1)`` with ``x1``/``y1`` exclusive: the smallest one holding every pixel the
object touches, so every pixel that differs from the background lies inside it.

Grating angles are those of the stripes, counter-clockwise from horizontal as seen on screen:
``grating 0°`` has horizontal stripes, ``grating 90°`` vertical ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "grating 0°",
    "grating 45°",
    "grating 90°",
    "grating 135°",
)

SIZE = 64
# Distinct seeds per split: a sample's generator is seeded with [split seed, index], so no image of
# one split is an image of another.
SPLIT_SEEDS: dict[str, int] = {"train": 1_000_003, "val": 2_000_003, "test": 3_000_017}
# The split sizes the bundled tinyvgg-shapes model is trained, selected and tested on.
SPLIT_SIZES: dict[str, int] = {"train": 16_000, "val": 2_000, "test": 5_000}

_GRATING_ANGLES = {CLASSES.index(f"grating {a}°"): a for a in (0, 45, 90, 135)}
_STAR_INNER = 0.45  # inner/outer radius of the five-pointed star
_CROSS_HALF_WIDTH = 0.32  # arm half-width relative to arm length
_MIN_CONTRAST = 0.3  # least luminance gap (0..1 scale) between object colour and either background end
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luma weights
# Shapes that may be drawn as outlines only, with how far (in line widths) the inner copy's circumradius
# sits inside: a circle's outline would be a ring (another class), so circles stay filled.
_OUTLINED = {"square": math.sqrt(2.0), "triangle": 2.0, "star": 2.6, "cross": 1.6}
_EDGE = 0.1  # anti-aliased coverage below this is dropped: every pixel inside a box visibly changes
_CHUNK = 512  # samples rasterised at once: bounds the float32 working set to ~25 MB per array


@dataclass(frozen=True)
class ShapesBatch:
    """``images`` uint8 N×64×64×3, ``labels`` int64 N (indices into CLASSES), ``boxes`` int64 N×4."""

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class _Params:
    labels: np.ndarray  # N
    bg_from: np.ndarray  # N×3, colour at one end of the background gradient
    bg_to: np.ndarray  # N×3
    bg_angle: np.ndarray  # N, gradient direction
    noise_sigma: np.ndarray  # N
    colour: np.ndarray  # N×3
    centre: np.ndarray  # N×2 (x, y)
    radius: np.ndarray  # N, circumradius (shapes) or envelope radius (gratings)
    rotation: np.ndarray  # N, radians (for gratings: the stripe angle)
    inner: np.ndarray  # N, ring inner radius / outer radius
    period: np.ndarray  # N, grating period in pixels
    phase: np.ndarray  # N, grating phase
    noise: np.ndarray  # N×64×64×3 standard normal
    # The wide rendering distribution (a user's drawings look like none of one narrow style):
    bg_kind: np.ndarray  # N: 0 linear gradient, 1 flat colour, 2 gradient plus soft colour blotches
    blotches: np.ndarray  # N×6×6×3 in [-1, 1], upsampled smoothly over the image (bg_kind 2)
    blotch_amp: np.ndarray  # N
    speckle: np.ndarray  # N×64×64 int8: 0 none, 1 black, 2 white (salt-and-pepper noise)
    inner_radius: np.ndarray  # N: > 0 draws only the outline (the shape minus this smaller copy)
    antialias: np.ndarray  # N bool: 2×2 supersampled edges instead of hard ones


def _draw_one(seed: int, index: int) -> tuple:
    rng = np.random.default_rng([seed, index])
    # Balanced classes, and the gallery's first ten samples of a split show every class once.
    label = index % len(CLASSES)
    u = rng.random(12)  # one call for the scalars: per-call overhead dominates at this size
    bg_from = u[0:3]
    bg_to = np.clip(bg_from + (u[3:6] - 0.5) * 0.5, 0.0, 1.0)
    bg_angle = u[6] * 2 * math.pi
    w = np.random.default_rng([seed, index, 7]).random(12)  # the style draws, apart from the geometry's
    noise_sigma = (w[1] ** 1.5) * 0.16
    grating = label in _GRATING_ANGLES
    radius = 8.0 + 12.0 * u[8] if grating else 7.0 + 15.5 * u[8]  # under 7 px a square, triangle and star blur together
    # The object lies wholly inside the image: its extent from the centre is at most `radius`.
    cx = radius + 0.5 + u[9] * (SIZE - 2 * radius - 1.0)
    cy = radius + 0.5 + u[10] * (SIZE - 2 * radius - 1.0)
    rotation = math.radians(_GRATING_ANGLES[label]) if grating else u[11] * 2 * math.pi
    v = rng.random(3)
    # A ring at least 2.5 px thick so it never thins to a broken outline.
    inner = 0.45 + v[0] * (min(0.7, 1.0 - 2.5 / radius) - 0.45)
    period = 4.0 + 3.0 * v[1]
    phase = v[2] * 2 * math.pi
    bg_kind = int(w[0] * 3)
    if bg_kind == 1:
        bg_to = bg_from
    colour = _contrasting_colour(rng, bg_from, bg_to, _MIN_CONTRAST * (1.0 if grating else 0.5 + 0.5 * w[7]))
    # Uniform noise scaled to unit variance: a quarter of the cost of Gaussian draws, looks the same.
    noise = rng.random((SIZE, SIZE, 3), dtype=np.float32)
    noise -= 0.5
    noise *= math.sqrt(12.0)
    style = np.random.default_rng([seed, index, 11])
    blotches = (style.random((6, 6, 3), dtype=np.float32) - 0.5) * 2.0
    blotch_amp = 0.12 + 0.18 * w[8] if bg_kind == 2 else 0.0
    speckle = np.zeros((SIZE, SIZE), dtype=np.int8)
    if w[2] < 0.25:
        hits = style.random((SIZE, SIZE)) < 0.005 + 0.04 * w[3]
        speckle[hits] = 1 + (style.random(int(hits.sum())) < 0.5)
    outline = CLASSES[label] in _OUTLINED and w[4] < 0.4
    thickness = 1.3 + 2.2 * w[5]
    inner_radius = max(radius - thickness * _OUTLINED.get(CLASSES[label], 0.0), 0.0) if outline else 0.0
    antialias = bool(w[6] < 0.5)
    return (label, bg_from, bg_to, bg_angle, noise_sigma, colour, (cx, cy), radius, rotation, inner, period, phase, noise,
            bg_kind, blotches, blotch_amp, speckle, inner_radius, antialias)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ _LUMA


def _contrasting_colour(rng: np.random.Generator, bg_from: np.ndarray, bg_to: np.ndarray,
                        min_contrast: float = _MIN_CONTRAST) -> np.ndarray:
    """A random colour whose luminance differs from both ends of the background gradient.

    Luminance, not just RGB distance: an isoluminant red-on-green object would need colour-opponent
    filters that a 10-channel first layer can hardly spare, and it is hard to see on a projector.
    """
    candidates = rng.random((16, 3))
    lum = _luminance(candidates)
    gap = np.minimum(np.abs(lum - _luminance(bg_from)), np.abs(lum - _luminance(bg_to)))
    ok = np.flatnonzero(gap >= min_contrast)
    if ok.size:
        return candidates[ok[0]]
    # Mid-grey backgrounds: black or white, whichever is farther from both ends, always contrasts.
    darkest = min(_luminance(bg_from), _luminance(bg_to))
    brightest = max(_luminance(bg_from), _luminance(bg_to))
    return np.zeros(3) if darkest >= 1.0 - brightest else np.ones(3)


def _draw_params(seed: int, indices: range) -> _Params:
    rows = [_draw_one(seed, i) for i in indices]
    cols = list(zip(*rows))

    def f32(values: tuple) -> np.ndarray:
        return np.asarray(values, dtype=np.float32)

    return _Params(
        labels=np.asarray(cols[0], dtype=np.int64),
        bg_from=f32(cols[1]),
        bg_to=f32(cols[2]),
        bg_angle=f32(cols[3]),
        noise_sigma=f32(cols[4]),
        colour=f32(cols[5]),
        centre=f32(cols[6]),
        radius=f32(cols[7]),
        rotation=f32(cols[8]),
        inner=f32(cols[9]),
        period=f32(cols[10]),
        phase=f32(cols[11]),
        noise=np.stack(cols[12]) if rows else np.zeros((0, SIZE, SIZE, 3), np.float32),
        bg_kind=np.asarray(cols[13], dtype=np.int64),
        blotches=np.stack(cols[14]) if rows else np.zeros((0, 6, 6, 3), np.float32),
        blotch_amp=f32(cols[15]),
        speckle=np.stack(cols[16]) if rows else np.zeros((0, SIZE, SIZE), np.int8),
        inner_radius=f32(cols[17]),
        antialias=np.asarray(cols[18], dtype=bool),
    )


def _alpha(p: _Params) -> np.ndarray:
    """Object opacity N×64×64 in [0, 1]; exactly 0 wherever the object does not reach.

    Outlined shapes are the shape minus a smaller copy; anti-aliased ones average 2×2 sub-pixel samples
    (coverage under ``_EDGE`` is dropped, so a box never holds a pixel the object leaves unchanged)."""
    outlined = p.inner_radius > 0

    def shape(offset: tuple[float, float]) -> np.ndarray:
        centre = p.centre + np.asarray(offset, dtype=np.float32)
        full = _coverage(p, centre, p.radius)
        if outlined.any():
            full = np.clip(full - np.where(outlined[:, None, None], _coverage(p, centre, np.maximum(p.inner_radius, 1.0)), 0.0), 0, 1)
        return full

    alpha = shape((0.0, 0.0))
    if p.antialias.any():
        smooth = sum(shape((ox, oy)) for ox in (-0.25, 0.25) for oy in (-0.25, 0.25)) / 4.0
        grating = np.isin(p.labels, list(_GRATING_ANGLES))
        pick = (p.antialias & ~grating)[:, None, None]
        alpha = np.where(pick, np.where(smooth >= _EDGE, smooth, 0.0), alpha).astype(np.float32)
    return alpha


def _coverage(p: _Params, centre: np.ndarray, radius: np.ndarray) -> np.ndarray:
    n = p.labels.shape[0]
    grid = np.arange(SIZE, dtype=np.float32) + 0.5
    dx = grid[None, None, :] - centre[:, 0, None, None]
    dy = grid[None, :, None] - centre[:, 1, None, None]
    cos = np.cos(p.rotation)[:, None, None]
    sin = np.sin(p.rotation)[:, None, None]
    # Local coordinates: u along the object's rotated x axis, v along its rotated y axis.
    u = cos * dx + sin * dy
    v = -sin * dx + cos * dy
    r = radius[:, None, None]
    dist2 = dx * dx + dy * dy
    alpha = np.zeros((n, SIZE, SIZE), dtype=np.float32)

    def put(mask: np.ndarray, sel: np.ndarray) -> None:
        alpha[sel] = mask.astype(np.float32)

    for label in range(len(CLASSES)):
        sel = p.labels == label
        if not sel.any():
            continue
        name = CLASSES[label]
        us, vs, rs, d2 = u[sel], v[sel], r[sel], dist2[sel]
        if name == "circle":
            put(d2 <= rs * rs, sel)
        elif name == "ring":
            inner = p.inner[sel][:, None, None] * rs
            put((d2 <= rs * rs) & (d2 >= inner * inner), sel)
        elif name == "square":
            half = rs / math.sqrt(2.0)  # circumradius → half side
            put((np.abs(us) <= half) & (np.abs(vs) <= half), sel)
        elif name == "triangle":
            put(_regular_polygon(us, vs, rs, 3), sel)
        elif name == "star":
            put(_star(us, vs, rs), sel)
        elif name == "cross":
            arm = rs / math.sqrt(1.0 + _CROSS_HALF_WIDTH**2)  # outer corners on the circumcircle
            half = _CROSS_HALF_WIDTH * arm
            au, av = np.abs(us), np.abs(vs)
            put(((au <= arm) & (av <= half)) | ((au <= half) & (av <= arm)), sel)
        else:
            alpha[sel] = _grating(dx[sel], dy[sel], d2, rs, p.rotation[sel], p.period[sel], p.phase[sel])
    return alpha


def _regular_polygon(u: np.ndarray, v: np.ndarray, r: np.ndarray, sides: int) -> np.ndarray:
    """Inside a regular polygon with a vertex on the local +u axis, circumradius ``r``."""
    apothem = r * math.cos(math.pi / sides)
    inside = np.ones(u.shape, dtype=bool)
    for k in range(sides):
        normal = (2 * k + 1) * math.pi / sides  # edge normals sit halfway between vertices
        inside &= u * math.cos(normal) + v * math.sin(normal) <= apothem
    return inside


def _star(u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Inside a five-pointed star (a point on the local +u axis), outer radius ``r``.

    The star has ten mirror-symmetric sectors; folding a point's polar angle into the first half
    sector reduces the test to one edge, from the outer vertex (r, 0°) to the inner one (ri, 36°).
    """
    sector = 2 * math.pi / 5
    angle = np.mod(np.arctan2(v, u), sector)
    angle = np.minimum(angle, sector - angle)
    rho = np.sqrt(u * u + v * v)
    px, py = rho * np.cos(angle), rho * np.sin(angle)
    qx, qy = _STAR_INNER * math.cos(sector / 2), _STAR_INNER * math.sin(sector / 2)
    # Outward normal of the edge (1, 0)→(qx, qy) in units of r; the origin lies on its inner side.
    nx, ny = qy, 1.0 - qx
    return px * nx + py * ny <= r * nx


def _grating(dx, dy, d2, r, angle, period, phase) -> np.ndarray:
    """A sinusoidal patch under a round Gaussian envelope that falls to exactly 0 at radius ``r``.

    Stripes run at ``angle`` counter-clockwise from horizontal on screen (rows grow downwards), so
    the wave vector is perpendicular to (cos a, −sin a), i.e. (sin a, cos a) in (x, row) terms.
    """
    a = angle[:, None, None]
    sigma2 = (0.6 * r) ** 2
    edge = np.exp(-(r * r) / (2 * sigma2))
    envelope = np.clip((np.exp(-d2 / (2 * sigma2)) - edge) / (1.0 - edge), 0.0, 1.0)
    envelope = np.where(d2 < r * r, envelope, 0.0)
    wave = np.sin(2 * math.pi * (dx * np.sin(a) + dy * np.cos(a)) / period[:, None, None] + phase[:, None, None])
    return (envelope * (0.5 + 0.5 * wave)).astype(np.float32)


def _render(p: _Params, objects: bool) -> tuple[np.ndarray, np.ndarray]:
    grid = np.arange(SIZE, dtype=np.float32) + 0.5 - SIZE / 2
    gx, gy = np.cos(p.bg_angle)[:, None, None], np.sin(p.bg_angle)[:, None, None]
    t = np.clip(0.5 + (gx * grid[None, None, :] + gy * grid[None, :, None]) / SIZE, 0.0, 1.0)[..., None]
    # In-place arithmetic below: the N×64×64×3 passes are the cost of rendering.
    image = t * (p.bg_to - p.bg_from)[:, None, None, :]
    image += p.bg_from[:, None, None, :]
    if (p.blotch_amp > 0).any():  # soft colour blotches: a 6×6 field, bilinearly spread over 64×64
        spread = _BLOTCH_SPREAD
        image += np.einsum("yi,nijc,xj->nyxc", spread, p.blotches, spread) * p.blotch_amp[:, None, None, None]
    alpha = _alpha(p)
    if objects:
        blend = p.colour[:, None, None, :] - image
        blend *= alpha[..., None]
        image += blend
    noise = p.noise
    noise *= p.noise_sigma[:, None, None, None]
    image += noise
    image[p.speckle == 1] = 0.0
    image[p.speckle == 2] = 1.0
    np.clip(image, 0.0, 1.0, out=image)
    image *= 255.0
    image += 0.5  # round half up; values are non-negative so truncation below rounds
    return image.astype(np.uint8), _boxes(alpha > 0)


def _bilinear_spread(src: int, dst: int) -> np.ndarray:
    """dst×src weights that resample ``src`` samples over ``dst`` pixels linearly (edges clamped)."""
    pos = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, src - 1)
    weights = np.zeros((dst, src), dtype=np.float32)
    weights[np.arange(dst), lo] += 1 - (pos - lo)
    weights[np.arange(dst), hi] += pos - lo
    return weights


_BLOTCH_SPREAD = _bilinear_spread(6, SIZE)


def _boxes(mask: np.ndarray) -> np.ndarray:
    cols, rows = mask.any(axis=1), mask.any(axis=2)  # N×W, N×H
    x0 = cols.argmax(axis=1)
    x1 = SIZE - cols[:, ::-1].argmax(axis=1)
    y0 = rows.argmax(axis=1)
    y1 = SIZE - rows[:, ::-1].argmax(axis=1)
    return np.stack([x0, y0, x1, y1], axis=1).astype(np.int64)


def generate(count: int, seed: int, *, start: int = 0, objects: bool = True) -> ShapesBatch:
    """Samples ``start … start+count-1`` of the dataset with this ``seed``.

    ``objects=False`` renders the very same backgrounds (gradient and noise) without the objects,
    with the same labels and boxes: the reference for "which pixels did the object change", used
    by the box tests and usable as a saliency baseline.
    """
    if count < 0:
        raise ValueError("count must be non-negative")
    images = np.empty((count, SIZE, SIZE, 3), dtype=np.uint8)
    labels = np.empty(count, dtype=np.int64)
    boxes = np.empty((count, 4), dtype=np.int64)
    for lo in range(0, count, _CHUNK):
        hi = min(count, lo + _CHUNK)
        params = _draw_params(seed, range(start + lo, start + hi))
        images[lo:hi], boxes[lo:hi] = _render(params, objects)
        labels[lo:hi] = params.labels
    return ShapesBatch(images=images, labels=labels, boxes=boxes)


def generate_split(split: str, count: int | None = None) -> ShapesBatch:
    """The first ``count`` samples (default: SPLIT_SIZES[split]) of the named split."""
    seed = _split_seed(split)
    return generate(SPLIT_SIZES[split] if count is None else count, seed)


def sample(index: int, split: str = "test") -> tuple[Image.Image, int, tuple[int, int, int, int]]:
    """One sample of a split for the gallery: (RGB image, class index, box (x0, y0, x1, y1)).

    Equal to ``generate(n, SPLIT_SEEDS[split]).images[index]`` for any ``n > index``.
    """
    if index < 0:
        raise ValueError("index must be non-negative")
    batch = generate(1, _split_seed(split), start=index)
    box = tuple(int(v) for v in batch.boxes[0])
    return Image.fromarray(batch.images[0]), int(batch.labels[0]), box  # type: ignore[return-value]


def _split_seed(split: str) -> int:
    try:
        return SPLIT_SEEDS[split]
    except KeyError:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_SEEDS)}") from None
