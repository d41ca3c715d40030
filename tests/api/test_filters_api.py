"""Filter endpoints: kernel pictures match weights.npy and their JSON; histograms count every weight."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image


def _npy(content: bytes) -> np.ndarray:
    return np.load(io.BytesIO(content), allow_pickle=False)


def _get(client, url: str, **params):
    response = client.get(url, params=params)
    assert response.status_code == 200, response.text
    return response


def _cell(image: np.ndarray, row: int, col: int, kh: int, kw: int, gap: int) -> np.ndarray:
    y, x = row * (kh + gap), col * (kw + gap)
    return image[y:y + kh, x:x + kw].astype(int)


def test_first_layer_kernels_are_colour_pictures_of_the_weights(module_client) -> None:
    base = "/api/models/resnet18/layers/conv1"
    w = _npy(_get(module_client, f"{base}/weights.npy", weights="untrained").content)
    meta = _get(module_client, f"{base}/filters.json", weights="untrained").json()
    png = _get(module_client, f"{base}/filters.png", weights="untrained")
    assert png.headers["x-convscope-weights"] == "untrained"
    image = np.array(Image.open(io.BytesIO(png.content)).convert("RGB"))
    assert meta["mode"] == "rgb" and meta["kernel"] == {"height": 7, "width": 7}
    assert image.shape[:2] == (meta["image"]["height"], meta["image"]["width"])
    cols = meta["grid"]["columns"]
    for i in (0, 17, 63):
        k = w[i]
        expected = np.rint((k - k.min()) / (k.max() - k.min()) * 255).transpose(1, 2, 0)
        cell = _cell(image, i // cols, i % cols, 7, 7, meta["gap"])
        assert np.abs(cell - expected).max() <= 1


def test_deep_layer_pages_and_scale(module_client) -> None:
    base = "/api/models/resnet18/layers/layer4.0.conv2"
    w = _npy(_get(module_client, f"{base}/weights.npy", weights="untrained").content)
    meta = _get(module_client, f"{base}/filters.json", weights="untrained", out_start=64, in_start=448).json()
    assert meta["mode"] == "slices" and meta["truncated"]
    assert meta["out"] == {"start": 64, "count": 64, "total": 512}
    assert meta["in"] == {"start": 448, "count": 64, "total": 512}
    m = float(np.abs(w).max())
    assert meta["range"] == pytest.approx([-m, m])
    png = _get(module_client, f"{base}/filters.png", weights="untrained", out_start=64, in_start=448)
    image = np.array(Image.open(io.BytesIO(png.content)).convert("RGB"))
    assert image.shape[:2] == (64 * 3 + 63, 64 * 3 + 63)
    # the strongest positive weight of the page is the reddest pixel, the strongest negative the bluest
    page = w[64:128, 448:512]
    r, c, y, x = np.unravel_index(page.argmax(), page.shape)
    pixel = image[r * 4 + y, c * 4 + x].astype(int)
    assert pixel[0] > pixel[2]


@pytest.mark.parametrize(
    ("layer", "params", "status", "code"),
    [
        ("fc", {}, 404, "not_a_conv_layer"),  # no such picture: 404, as the schema declares
        ("layer4.0.conv2", {"out_start": 512}, 404, "invalid_page"),
        ("layer4.0.conv2", {"in_count": 65}, 404, "invalid_page"),
        ("layer4.0.conv2", {"in_count": 257}, 422, "validation_error"),
        ("layer4.0.conv2", {"out_start": -1}, 422, "validation_error"),
        ("nope", {}, 404, "unknown_layer"),
    ],
)
def test_bad_filter_requests(module_client, layer, params, status, code) -> None:
    response = module_client.get(f"/api/models/resnet18/layers/{layer}/filters.png",
                                 params={"weights": "untrained", **params})
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_histogram_counts_every_weight(module_client) -> None:
    base = "/api/models/lenet5/layers/features.3"
    w = _npy(_get(module_client, f"{base}/weights.npy").content)
    body = _get(module_client, f"{base}/histogram.json", bins=20).json()
    counts, edges = np.histogram(w.astype(np.float64), bins=20)
    assert body["counts"] == counts.tolist() and sum(body["counts"]) == w.size
    np.testing.assert_allclose(body["edges"], edges, rtol=1e-6)
    response = module_client.get("/api/models/lenet5/layers/features.1/histogram.json")
    assert response.status_code == 404 and response.json()["error"]["code"] == "no_weight"
    response = module_client.get(f"{base}/histogram.json", params={"bins": 1})
    assert response.status_code == 422
