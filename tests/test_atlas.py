"""Atlases decode to the right grid and tile sizes, and their legend values are the data's range."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from server.services.rendering import atlas
from server.services.rendering.colormaps import COLORMAPS, colormap_stops


def _decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def _maps(seed: int = 0, shape: tuple[int, ...] = (10, 6, 9), signed: bool = True) -> np.ndarray:
    a = np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * np.arange(1, shape[0] + 1).reshape(-1, *[1] * (len(shape) - 1))
    return a if signed else np.abs(a)


def _tile(indices: np.ndarray, spec: atlas.AtlasLayout, c: int) -> np.ndarray:
    r, k = divmod(c, spec.columns)
    return indices[r * spec.tile_height:(r + 1) * spec.tile_height, k * spec.tile_width:(k + 1) * spec.tile_width]


def test_grid_geometry_and_png_size() -> None:
    a = _maps(shape=(10, 6, 9))
    spec = atlas.layout(a)
    assert (spec.channels, spec.tile_height, spec.tile_width) == (10, 6, 9)
    assert spec.columns * spec.rows >= 10 > spec.columns * (spec.rows - 1)
    image = _decode(atlas.atlas_png(a, spec))
    assert image.mode == "P"
    assert image.size == (spec.columns * 9, spec.rows * 6)
    assert spec.as_json()["image"] == {"width": image.size[0], "height": image.size[1]}
    spec5 = atlas.layout(a, columns=5)
    assert (spec5.columns, spec5.rows) == (5, 2)
    assert _decode(atlas.atlas_png(a, spec5)).size == (45, 12)


def test_palette_is_the_colormap_and_pixels_place_each_channel_in_its_tile() -> None:
    a = _maps(signed=False)
    spec = atlas.layout(a, scale="channel", colormap="viridis")
    image = _decode(atlas.atlas_png(a, spec))
    palette = np.array(image.getpalette()[: 256 * 3], dtype=np.uint8).reshape(256, 3)
    np.testing.assert_array_equal(palette, COLORMAPS["viridis"])
    indices = np.array(image)
    for c in range(a.shape[0]):
        tile = _tile(indices, spec, c).astype(int)
        # per-channel scale: each channel's minimum is colour 0 and its maximum colour 255
        assert tile[np.unravel_index(a[c].argmin(), a[c].shape)] == 0
        assert tile[np.unravel_index(a[c].argmax(), a[c].shape)] == 255
        expected = np.rint((a[c] - a[c].min()) / (a[c].max() - a[c].min()) * 255)
        assert np.abs(tile - expected).max() <= 1
    assert spec.low.tolist() == pytest.approx(a.reshape(10, -1).min(1).tolist())
    assert spec.high.tolist() == pytest.approx(a.reshape(10, -1).max(1).tolist())


def test_layer_scale_legend_is_the_layer_range() -> None:
    a = _maps(signed=False)
    spec = atlas.layout(a, scale="layer")
    assert spec.colormap == "viridis"  # no negative values: sequential
    body = spec.as_json()
    assert body["data_range"] == pytest.approx([float(a.min()), float(a.max())])
    assert body["tiles"]["low"] == pytest.approx([float(a.min())] * a.shape[0])
    assert body["tiles"]["high"] == pytest.approx([float(a.max())] * a.shape[0])
    assert body["stops"] == colormap_stops("viridis", atlas.LEGEND_STOPS)
    indices = atlas.atlas_indices(a, spec)
    flat_max = np.unravel_index(a.argmax(), a.shape)
    assert _tile(indices, spec, int(flat_max[0]))[flat_max[1:]] == 255


def test_signed_data_gets_a_diverging_map_centred_on_zero() -> None:
    a = _maps(signed=True)
    a[0, 0, 0] = 0.0
    spec = atlas.layout(a, scale="layer")
    assert spec.colormap == "diverging" and spec.as_json()["diverging"]
    m = float(np.abs(a).max())
    assert float(spec.low[0]) == pytest.approx(-m) and float(spec.high[0]) == pytest.approx(m)
    indices = atlas.atlas_indices(a, spec)
    assert _tile(indices, spec, 0)[0, 0] in (127, 128)  # zero is the white middle
    per_channel = atlas.layout(a, scale="channel")
    for c in range(a.shape[0]):
        assert float(per_channel.high[c]) == pytest.approx(float(np.abs(a[c]).max()))
        assert float(per_channel.low[c]) == -float(per_channel.high[c])


def test_global_scale_uses_the_given_range() -> None:
    a = _maps(signed=False)
    spec = atlas.layout(a, scale="global", global_range=(-2.0, 50.0))
    assert spec.colormap == "diverging"  # the model's range is signed
    assert float(spec.low[3]) == -50.0 and float(spec.high[3]) == 50.0
    with pytest.raises(ValueError):
        atlas.layout(a, scale="global")


def test_vectors_are_one_by_one_tiles() -> None:
    v = np.linspace(-1, 3, 100, dtype=np.float32)
    spec = atlas.layout(v)
    assert (spec.channels, spec.tile_height, spec.tile_width) == (100, 1, 1)
    image = _decode(atlas.atlas_png(v, spec))
    assert image.size == (spec.columns, spec.rows) == (10, 10)
    indices = np.array(image)
    assert indices[9, 9] == 255 and indices[0, 0] == np.rint((-1 + 3) / 6 * 255)


def test_constant_channels_do_not_divide_by_zero() -> None:
    a = np.zeros((3, 4, 4), dtype=np.float32)
    spec = atlas.layout(a, scale="channel")
    indices = atlas.atlas_indices(a, spec)
    assert all(np.all(_tile(indices, spec, c) == 0) for c in range(3))
    signed = atlas.layout(a, scale="channel", colormap="diverging")
    indices = atlas.atlas_indices(a, signed)
    assert all(np.all(_tile(indices, signed, c) == 128) for c in range(3))


def test_channel_png_is_full_resolution_with_its_own_range() -> None:
    a = _maps(signed=False, shape=(4, 13, 17))
    spec = atlas.layout(a, scale="channel")
    image = _decode(atlas.channel_png(a, 2, spec))
    assert image.size == (17, 13)
    indices = np.array(image).astype(int)
    expected = np.rint((a[2] - a[2].min()) / (a[2].max() - a[2].min()) * 255)
    assert np.abs(indices - expected).max() <= 1


def test_identical_input_gives_identical_bytes() -> None:
    a = _maps()
    assert atlas.atlas_png(a, atlas.layout(a)) == atlas.atlas_png(a.copy(), atlas.layout(a.copy()))


def test_thumbnail_strip_rows_and_ranges() -> None:
    layers = [{"name": "conv", **atlas.summarise_layer("conv", _maps(shape=(6, 40, 40)))},
              {"name": "fc", **atlas.summarise_layer("fc", np.arange(5, dtype=np.float32))},
              {"name": "relu", **atlas.summarise_layer("relu", _maps(shape=(4, 8, 8), signed=False))}]
    assert layers[1]["thumbs"] is None and layers[1]["top_channels"][0] == 4
    meta = atlas.strip_rows(layers)
    png = atlas.strip_png(layers, meta)
    image = _decode(png)
    size = atlas.THUMB_SIZE
    assert image.size == (atlas.THUMBS_PER_LAYER * size, 2 * size)
    assert [m["name"] for m in meta] == ["conv", "relu"]
    assert meta[0]["colormap"] == "diverging" and meta[1]["colormap"] == "viridis"
    conv = _maps(shape=(6, 40, 40))
    means = conv.reshape(6, -1).mean(1)
    assert meta[0]["channels"] == [int(i) for i in np.argsort(-means)[:3]]
