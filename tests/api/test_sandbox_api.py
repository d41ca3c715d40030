"""POST /api/sandbox/convolve and /pool as API.md shapes them, presets, Gabor, whole-picture filters."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.conftest import png_bytes


def test_convolve_shape_and_values(module_client) -> None:
    body = {"input": [[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]],
            "kernel": [[1, 0, 1], [0, 1, 0], [1, 0, 1]], "padding": "valid", "stride": 1, "dilation": 1,
            "mode": "cross-correlation"}
    answer = module_client.post("/api/sandbox/convolve", json=body)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["output"] == [[4, 3, 4], [2, 4, 3], [2, 3, 4]]
    step = data["steps"][0]
    assert step["out"] == [0, 0] and len(step["cells"]) == 9 and step["sum"] == 4
    assert step["products"] == [1, 0, 1, 0, 1, 0, 0, 0, 1]


@pytest.mark.parametrize("padding", ["valid", "same", "full", 0, 2, [1, 0, 2, 1]])
@pytest.mark.parametrize("stride,dilation", [(1, 1), (2, 1), (1, 2), (3, 2)])
def test_convolve_matches_conv2d(module_client, padding, stride: int, dilation: int) -> None:
    rng = np.random.default_rng(11)
    x, k = rng.normal(size=(9, 8)).round(3), rng.normal(size=(3, 2)).round(3)
    data = module_client.post("/api/sandbox/convolve", json={
        "input": x.tolist(), "kernel": k.tolist(), "padding": padding, "stride": stride, "dilation": dilation,
        "mode": "convolution"}).json()
    pads = data["geometry"]["padding"]
    xt = F.pad(torch.from_numpy(x)[None, None], (pads["left"], pads["right"], pads["top"], pads["bottom"]))
    expected = F.conv2d(xt, torch.flip(torch.from_numpy(k), (0, 1))[None, None], stride=stride, dilation=dilation)
    np.testing.assert_allclose(data["output"], expected[0, 0].numpy(), rtol=1e-12, atol=1e-12)
    assert data["kernel_used"] == np.flip(k).tolist()


@pytest.mark.parametrize("op", ["max", "avg", "l2"])
def test_pool_matches_torch(module_client, op: str) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(7, 7))
    data = module_client.post("/api/sandbox/pool", json={"input": x.tolist(), "kernel_size": 3, "stride": 2,
                                                          "padding": 1, "op": op}).json()
    xt = torch.from_numpy(x)[None, None]
    expected = {"max": F.max_pool2d(xt, 3, 2, 1), "avg": F.avg_pool2d(xt, 3, 2, 1),
                "l2": F.lp_pool2d(F.pad(xt, (1, 1, 1, 1)), 2, 3, 2)}[op]
    np.testing.assert_allclose(data["output"], expected[0, 0].numpy(), rtol=1e-10, atol=1e-12)
    assert len(data["steps"]) == 16 and data["steps"][0]["out"] == [0, 0]


@pytest.mark.parametrize("path,body,code", [
    ("/api/sandbox/convolve", {"input": [[0] * 17] * 17, "kernel": [[1]]}, "input_too_large"),
    ("/api/sandbox/convolve", {"input": [[0] * 100] * 100, "kernel": [[1]]}, "input_too_large"),
    ("/api/sandbox/convolve", {"input": [[0] * 5] * 5, "kernel": [[1] * 8] * 8}, "kernel_too_large"),
    ("/api/sandbox/convolve", {"input": [[0] * 3] * 3, "kernel": [[1] * 5] * 5}, "empty_output"),
    ("/api/sandbox/convolve", {"input": [[0, 1], [2]], "kernel": [[1]]}, "invalid_input"),
    ("/api/sandbox/convolve", {"input": [], "kernel": [[1]]}, "invalid_input"),
    ("/api/sandbox/convolve", {"input": [[1]], "kernel": [[1]], "padding": "middle"}, "validation_error"),
    ("/api/sandbox/convolve", {"input": [[1]], "kernel": [[1]], "stride": 0}, "invalid_stride"),
    ("/api/sandbox/convolve", {"input": [[1]], "kernel": [[1]], "padding": 99}, "invalid_padding"),
    ("/api/sandbox/convolve", {"input": [["a"]], "kernel": [[1]]}, "validation_error"),
    ("/api/sandbox/pool", {"input": [[1] * 4] * 4, "kernel_size": 2, "padding": 2}, "invalid_padding"),
    ("/api/sandbox/pool", {"input": [[1] * 4] * 4, "op": "median"}, "validation_error"),
])
def test_bad_bodies_are_422(module_client, path: str, body: dict, code: str) -> None:
    answer = module_client.post(path, json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == code
    assert answer.json()["error"]["message"]


def test_infinity_is_refused(module_client) -> None:
    answer = module_client.post("/api/sandbox/convolve", content=b'{"input": [[Infinity]], "kernel": [[1]]}',
                                headers={"Content-Type": "application/json"})
    assert answer.status_code == 422


def test_presets_and_gabor(module_client) -> None:
    data = module_client.get("/api/sandbox/presets").json()
    ids = {k["id"] for k in data["kernels"]}
    assert {"identity", "box_blur", "gaussian_blur", "sharpen", "sobel_x", "sobel_y", "prewitt_x", "laplacian",
            "vertical_edge", "horizontal_edge"} <= ids
    assert any(e["id"] == "slide_5x5" for e in data["examples"])
    g = module_client.get("/api/sandbox/kernels/gabor", params={"size": 5, "theta": 45, "wavelength": 3}).json()
    assert np.array(g["kernel"]).shape == (5, 5)
    assert module_client.get("/api/sandbox/kernels/gabor", params={"size": 9}).status_code == 422


def test_shift_demo(module_client) -> None:
    grid = [[1 if 3 <= r <= 6 and 3 <= c <= 6 else 0 for c in range(10)] for r in range(10)]
    data = module_client.post("/api/sandbox/shift", json={"input": grid, "kernel": [[-1, 0, 1]] * 3,
                                                          "dy": 1, "dx": 0}).json()
    assert data["max_difference_interior"] == 0.0
    assert np.array(data["shifted_output"]).shape == (10, 10)


@pytest.fixture(scope="module")
def photo_id(module_client) -> str:
    picture = np.zeros((40, 60, 3), dtype=np.uint8)
    picture[:, 30:] = 255  # one vertical edge at column 30
    answer = module_client.post("/api/images", files={"file": ("edge.png", png_bytes(picture), "image/png")})
    return answer.json()["image_id"]


def test_filtered_picture_has_legend_and_finds_the_edge(module_client, photo_id: str) -> None:
    answer = module_client.get(f"/api/sandbox/images/{photo_id}/filtered.png", params={"preset": "sobel_x"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert answer.headers["X-ConvScope-Colormap"] == "diverging"  # zero padding makes negative borders
    assert float(answer.headers["X-ConvScope-Max"]) == pytest.approx(4.0)  # (1+2+1)·1.0 across the edge
    picture = np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB")).astype(int)
    assert picture.shape == (40, 60, 3)
    middle = picture[20]
    edge = middle[29:31]  # +4 at the edge: the map's dark-red end
    assert (edge[:, 0] > edge[:, 1] + 60).all() and (edge[:, 0] > edge[:, 2] + 60).all()
    assert middle[10].min() > 230 and middle[45].min() > 230  # 0 away from it: white
    assert middle[59, 2] > middle[59, 0] + 40  # the zero-padded right border is negative: blue
    blur = module_client.get(f"/api/sandbox/images/{photo_id}/filtered.png", params={"kernel": "1,1;1,1", "padding": "valid"})
    assert blur.headers["X-ConvScope-Colormap"] == "gray" and blur.headers["X-ConvScope-Shape"] == "39x59"


@pytest.mark.parametrize("params", [{"preset": "nope"}, {"kernel": "1,x"}, {"kernel": "1,1;1"}, {"padding": "odd", "preset": "sobel_x"}])
def test_filtered_picture_bad_params(module_client, photo_id: str, params: dict) -> None:
    answer = module_client.get(f"/api/sandbox/images/{photo_id}/filtered.png", params=params)
    assert answer.status_code == 422 and answer.json()["error"]["code"]


def test_crop(module_client, photo_id: str) -> None:
    data = module_client.get(f"/api/sandbox/images/{photo_id}/crop", params={"size": 6, "fit": 30}).json()
    grid = np.array(data["input"])
    assert grid.shape == (6, 6) and grid.min() >= 0.0 and grid.max() <= 1.0
    assert grid[:, 0].max() == 0.0 and grid[:, -1].min() == 1.0  # the crop straddles the edge
