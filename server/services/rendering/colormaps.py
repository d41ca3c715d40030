"""Colour maps as 256-entry numpy lookup tables, built by us from a few anchor colours.

Values in [0, 1] map to RGB bytes. Sequential maps (``viridis``, ``magma``, ``gray``) are for data with
one sign; the diverging map (``diverging``: blue – white – red) is for signed data, where the caller maps
0 to 0.5 so that white means exactly zero. The page draws its legends from :func:`colormap_stops`, so the
server's pixels and the page's legend come from the same table.
"""

from __future__ import annotations

import numpy as np

LUT_SIZE = 256

# Anchor colours, evenly spaced over [0, 1]; the table interpolates linearly between them.
_ANCHORS: dict[str, tuple[str, ...]] = {
    # perceptually ordered dark-blue → green → yellow, in the manner of matplotlib's viridis
    "viridis": ("#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"),
    # black → purple → orange → pale yellow, in the manner of magma
    "magma": ("#000004", "#3b0f70", "#8c2981", "#de4968", "#fe9f6d", "#fcfdbf"),
    "gray": ("#000000", "#ffffff"),
    # blue (negative) → white (zero, at exactly 0.5) → red (positive); odd count keeps white in the middle
    "diverging": (
        "#053061", "#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7",
        "#fddbc7", "#f4a582", "#d6604d", "#b2182b", "#67001f",
    ),
}

DIVERGING = frozenset({"diverging"})
DEFAULT_SEQUENTIAL = "viridis"
DEFAULT_DIVERGING = "diverging"


def _hex_to_rgb(colour: str) -> tuple[int, int, int]:
    value = colour.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def _build_lut(anchors: tuple[str, ...]) -> np.ndarray:
    rgb = np.array([_hex_to_rgb(c) for c in anchors], dtype=np.float64)
    anchor_pos = np.linspace(0.0, 1.0, len(anchors))
    pos = np.linspace(0.0, 1.0, LUT_SIZE)
    lut = np.stack([np.interp(pos, anchor_pos, rgb[:, k]) for k in range(3)], axis=1)
    lut = np.rint(lut).astype(np.uint8)
    lut.setflags(write=False)
    return lut


COLORMAPS: dict[str, np.ndarray] = {name: _build_lut(anchors) for name, anchors in _ANCHORS.items()}


def is_diverging(name: str) -> bool:
    """True for maps meant for signed data (centre = zero)."""
    return name in DIVERGING


def _lut(name: str) -> np.ndarray:
    try:
        return COLORMAPS[name]
    except KeyError:
        raise ValueError(f"unknown colour map {name!r}; choose one of {', '.join(COLORMAPS)}") from None


def colormap_indices(values_0_to_1: np.ndarray) -> np.ndarray:
    """Table indices (uint8) for values in [0, 1]; out-of-range values clip, NaN maps to 0."""
    values = np.nan_to_num(np.asarray(values_0_to_1, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return np.rint(np.clip(values, 0.0, 1.0) * (LUT_SIZE - 1)).astype(np.uint8)


def apply_colormap(values_0_to_1: np.ndarray, name: str) -> np.ndarray:
    """RGB bytes (shape ``values.shape + (3,)``, uint8) for ``values`` scaled to [0, 1]."""
    return _lut(name)[colormap_indices(values_0_to_1)]


def colormap_stops(name: str, n: int = 11) -> list[str]:
    """``n`` evenly spaced colours of the map from 0 to 1 as ``#rrggbb``, for drawing a legend."""
    if n < 2:
        raise ValueError("a legend needs at least 2 stops")
    lut = _lut(name)
    idx = np.rint(np.linspace(0, LUT_SIZE - 1, n)).astype(int)
    return ["#{:02x}{:02x}{:02x}".format(*(int(c) for c in lut[i])) for i in idx]
