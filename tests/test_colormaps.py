"""Colour maps: shape, ends, monotone lightness, diverging centre, legend stops from the same table."""

import numpy as np
import pytest

from server.services.rendering.colormaps import COLORMAPS, apply_colormap, colormap_stops, is_diverging


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])


@pytest.mark.parametrize("name", sorted(COLORMAPS))
def test_shape_and_dtype(name: str) -> None:
    values = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    out = apply_colormap(values, name)
    assert out.shape == (3, 4, 3)
    assert out.dtype == np.uint8


@pytest.mark.parametrize("name", ["viridis", "magma", "gray"])
def test_sequential_maps_get_lighter(name: str) -> None:
    rgb = apply_colormap(np.linspace(0, 1, 256), name)
    lum = _luminance(rgb)
    assert np.all(np.diff(lum) >= -1.0)  # monotone up to rounding
    assert lum[-1] - lum[0] > 150


def test_gray_ends() -> None:
    out = apply_colormap(np.array([0.0, 1.0]), "gray")
    assert out[0].tolist() == [0, 0, 0]
    assert out[1].tolist() == [255, 255, 255]


def test_diverging_centre_is_near_white_and_ends_are_blue_and_red() -> None:
    assert is_diverging("diverging") and not is_diverging("viridis")
    low, mid, high = apply_colormap(np.array([0.0, 0.5, 1.0]), "diverging")
    assert min(mid) >= 240
    assert low[2] > low[0]  # blue for negative
    assert high[0] > high[2]  # red for positive
    # symmetric lightness around the centre, so neither sign looks stronger
    lum = _luminance(apply_colormap(np.linspace(0, 1, 255), "diverging"))
    assert np.all(np.abs(lum - lum[::-1]) < 40)


def test_out_of_range_and_nan_are_clipped() -> None:
    out = apply_colormap(np.array([-3.0, np.nan, 7.0]), "gray")
    assert out[:, 0].tolist() == [0, 0, 255]


def test_stops_come_from_the_table() -> None:
    stops = colormap_stops("viridis", 5)
    assert len(stops) == 5
    assert stops[0] == "#440154" and stops[-1] == "#fde725"
    lut_mid = apply_colormap(np.array([0.5]), "viridis")[0]
    r, g, b = (int(stops[2][i:i + 2], 16) for i in (1, 3, 5))
    assert np.abs(np.array([r, g, b]) - lut_mid.astype(int)).max() <= 1


def test_unknown_map_raises() -> None:
    with pytest.raises(ValueError):
        apply_colormap(np.zeros(2), "rainbow")
    with pytest.raises(ValueError):
        colormap_stops("viridis", 1)
