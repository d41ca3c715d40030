"""Kernel pictures and weight histograms, checked pixel by pixel against the weights."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from server.services.feature_maps.filters import (
    GAP,
    MAX_IN_PER_PAGE,
    MAX_OUT_PER_PAGE,
    FilterRequestError,
    kernel_atlas,
    kernel_page,
    weight_histogram,
)
from server.services.rendering.colormaps import apply_colormap


def _rgb(png: bytes) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(png)).convert("RGB"))


def test_rgb_first_layer_kernels_are_each_normalised_on_their_own() -> None:
    w = np.random.default_rng(0).standard_normal((10, 3, 5, 5)).astype(np.float32)
    w[4] *= 100.0  # one loud kernel must not wash out the others
    page = kernel_page(w.shape)
    assert page.mode == "rgb" and page.out_count == 10
    png, meta = kernel_atlas(w, page)
    cols, rows = meta["grid"]["columns"], meta["grid"]["rows"]
    assert (cols, rows) == (4, 3)
    image = _rgb(png)
    assert image.shape == (rows * 5 + (rows - 1) * GAP, cols * 5 + (cols - 1) * GAP, 3)
    assert meta["image"] == {"height": image.shape[0], "width": image.shape[1]}
    for i in range(10):
        r, c = divmod(i, cols)
        cell = image[r * (5 + GAP):r * (5 + GAP) + 5, c * (5 + GAP):c * (5 + GAP) + 5].astype(int)
        k = w[i]
        expected = np.rint((k - k.min()) / (k.max() - k.min()) * 255).transpose(1, 2, 0)
        assert np.abs(cell - expected).max() <= 1
        assert meta["kernels"]["low"][i] == pytest.approx(float(k.min()))
        assert meta["kernels"]["high"][i] == pytest.approx(float(k.max()))
    assert not meta["truncated"]


def test_deeper_layers_are_diverging_slices_on_one_layer_scale() -> None:
    w = np.random.default_rng(1).standard_normal((6, 4, 3, 3)).astype(np.float32)
    page = kernel_page(w.shape, out_start=2, out_count=3, in_start=1, in_count=2)
    png, meta = kernel_atlas(w, page)
    assert meta["mode"] == "slices" and meta["grid"] == {"columns": 2, "rows": 3}
    m = float(np.abs(w).max())
    assert meta["range"] == pytest.approx([-m, m])
    image = _rgb(png)
    assert image.shape == (3 * 3 + 2 * GAP, 2 * 3 + GAP, 3)
    for r in range(3):
        for c in range(2):
            cell = image[r * (3 + GAP):r * (3 + GAP) + 3, c * (3 + GAP):c * (3 + GAP) + 3]
            expected = apply_colormap(0.5 + w[2 + r, 1 + c] / (2 * m), "diverging")
            np.testing.assert_array_equal(cell, expected)
    assert meta["truncated"]


def test_large_layers_are_paged() -> None:
    shape = (512, 512, 3, 3)
    page = kernel_page(shape)
    assert (page.out_count, page.in_count) == (MAX_OUT_PER_PAGE, MAX_IN_PER_PAGE)
    last = kernel_page(shape, out_start=500, in_start=480)
    assert (last.out_count, last.in_count) == (12, 32)
    for bad in ({"out_start": 512}, {"out_count": 65}, {"in_start": -1}, {"in_count": 0}):
        with pytest.raises(FilterRequestError):
            kernel_page(shape, **bad)
    with pytest.raises(FilterRequestError):
        kernel_page((10, 20))


def test_histogram_counts_every_weight() -> None:
    w = np.random.default_rng(2).standard_normal((8, 4, 3, 3)).astype(np.float32)
    body = weight_histogram(w, bins=7)
    counts, edges = np.histogram(w.astype(np.float64), bins=7)
    assert body["counts"] == counts.tolist()
    np.testing.assert_allclose(body["edges"], edges, rtol=1e-6)
    assert sum(body["counts"]) == body["count"] == w.size
    assert body["min"] == pytest.approx(float(w.min())) and body["max"] == pytest.approx(float(w.max()))
    assert body["mean"] == pytest.approx(float(w.astype(np.float64).mean()))
