"""Network overview and dense-layer detail: numbers equal PyTorch's on the model's own input."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from server.services.network.overview import choose_columns
from tests.conftest import png_bytes


@pytest.fixture(scope="module")
def image_id(module_client) -> str:
    rng = np.random.default_rng(3)
    picture = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    response = module_client.post("/api/images", files={"file": ("p.png", png_bytes(picture), "image/png")})
    assert response.status_code == 201, response.text
    return response.json()["image_id"]


def _npy(content: bytes) -> np.ndarray:
    return np.load(io.BytesIO(content), allow_pickle=False)


@pytest.mark.parametrize("model", ["lenet5", "tinyvgg-shapes"])
def test_columns_match_activations(module_client, image_id, model):
    base = f"/api/models/{model}/images/{image_id}"
    answer = module_client.get(f"{base}/network.json")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    png_answer = module_client.get(f"{base}/network.png")
    assert answer.headers["x-convscope-weights"] == png_answer.headers["x-convscope-weights"] == body["weights_used"]
    png = Image.open(io.BytesIO(png_answer.content))
    assert png.size == (body["png"]["width"], body["png"]["height"])
    layers = module_client.get(f"/api/models/{model}").json()["layers"]
    leaves = [layer["name"] for layer in layers if layer["leaf"] and layer["kind"] not in ("reshape", "dropout")]
    assert [c["name"] for c in body["columns"]] == leaves  # small models: every leaf is a column
    for column in body["columns"]:
        acts = _npy(module_client.get(f"{base}/layers/{column['name']}/activations.npy").content)
        flat = acts.reshape(acts.shape[0], -1)
        maxima = flat.max(axis=1)
        assert column["order"] == [int(i) for i in np.argsort(-maxima, kind="stable")]
        assert column["data_range"] == pytest.approx([float(flat.min()), float(flat.max())], rel=1e-6, abs=1e-6)
        assert len(column["shown"]) + column["more"] == acts.shape[0]
        for unit in column["shown"]:
            value = unit["value"] if column["vector"] else unit["max"]
            assert value == pytest.approx(float(maxima[unit["channel"]]), rel=1e-6, abs=1e-6)
            if not column["vector"]:
                x, y, w, h = unit["tile"]
                assert x + w <= png.size[0] and y + h <= png.size[1]
                assert unit["mean"] == pytest.approx(float(flat[unit["channel"]].mean()), rel=1e-5, abs=1e-6)


def test_deep_models_are_summarised_by_blocks():
    layers = [{"name": "stem", "depth": 1, "leaf": True, "kind": "conv", "output_shape": [8, 4, 4]}]
    for b in range(6):
        layers.append({"name": f"b{b}", "depth": 1, "leaf": False, "kind": "block", "output_shape": [8, 4, 4]})
        for i in range(5):
            layers.append({"name": f"b{b}.{i}", "depth": 2, "leaf": True, "kind": "conv", "output_shape": [8, 4, 4]})
    layers.append({"name": "flat", "depth": 1, "leaf": True, "kind": "reshape", "output_shape": [128]})
    layers.append({"name": "fc", "depth": 1, "leaf": True, "kind": "linear", "output_shape": [10]})
    assert [c["name"] for c in choose_columns(layers, 40)] == ["stem"] + [f"b{b}.{i}" for b in range(6) for i in range(5)] + ["fc"]
    assert [c["name"] for c in choose_columns(layers, 12)] == ["stem"] + [f"b{b}" for b in range(6)] + ["fc"]
    # VGG-like: a top level of three containers says too little, so the leaves are shown (and scroll)
    vgg = [{"name": "features", "depth": 1, "leaf": False, "kind": "block", "output_shape": [8, 4, 4]}]
    vgg += [{"name": f"features.{i}", "depth": 2, "leaf": True, "kind": "conv", "output_shape": [8, 4, 4]} for i in range(30)]
    vgg += [{"name": "avgpool", "depth": 1, "leaf": True, "kind": "pool", "output_shape": [8, 1, 1]},
            {"name": "fc", "depth": 1, "leaf": True, "kind": "linear", "output_shape": [10]}]
    assert len(choose_columns(vgg, 24)) == 32
    assert [c["name"] for c in choose_columns(vgg, 10)] == ["features", "avgpool", "fc"]  # 32 > 2 × 10
    # pass-through modules are no columns (their output is the previous column's)
    timm_like = [{"name": "bn1", "depth": 1, "leaf": False, "kind": "norm", "type": "BatchNormAct2d", "output_shape": [8, 4, 4]},
                 {"name": "bn1.drop", "depth": 2, "leaf": True, "kind": "other", "type": "Identity", "output_shape": [8, 4, 4]},
                 {"name": "bn1.act", "depth": 2, "leaf": True, "kind": "activation", "type": "ReLU6", "output_shape": [8, 4, 4]}]
    assert [c["name"] for c in choose_columns(timm_like, 24, min_columns=1)] == ["bn1.act"]


def test_dense_unit_equals_pytorch(module_client, image_id):
    from server.services.runtime.model_runtime import ModelRuntime

    runtime = ModelRuntime(torch.device("cpu"))
    loaded = runtime.load("lenet5", "auto")
    x = torch.from_numpy(_npy(module_client.get(f"/api/models/lenet5/images/{image_id}/input.npy").content))[None]
    with torch.no_grad():
        hidden = loaded.module.classifier[:3](loaded.module.features(x))[0]  # input of classifier.3
        out = loaded.module.classifier[:4](loaded.module.features(x))[0]
    layer = loaded.module.classifier[3]
    unit = 5
    products = layer.weight[unit].detach() * hidden
    answer = module_client.get(f"/api/models/lenet5/images/{image_id}/layers/classifier.3/dense.json",
                               params={"unit": unit, "top": 7})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["output"] == pytest.approx(float(out[unit]), abs=1e-5)
    assert body["bias"] + body["sum_of_products"] == pytest.approx(float(out[unit]), abs=1e-4)
    expected = torch.argsort(products.abs(), descending=True, stable=True)[:7]
    assert [c["index"] for c in body["contributions"]] == [int(i) for i in expected]
    for c in body["contributions"]:
        assert c["product"] == pytest.approx(float(products[c["index"]]), abs=1e-6)
        assert c["input"] == pytest.approx(float(hidden[c["index"]]), abs=1e-6)
    shown = sum(c["product"] for c in body["contributions"])
    assert shown + body["rest"]["sum"] == pytest.approx(body["sum_of_products"], abs=1e-4)
    assert body["rest"]["count"] == 120 - 7


@pytest.mark.parametrize(("params", "layer", "status"), [
    ({"unit": 10}, "classifier.5", 404), ({"unit": -1}, "classifier.5", 422), ({"unit": 0}, "features.0", 404),
    ({"unit": 0}, "nope", 404), ({"top": 0}, "classifier.5", 422),
])
def test_dense_bad_params(module_client, image_id, params, layer, status):
    answer = module_client.get(f"/api/models/lenet5/images/{image_id}/layers/{layer}/dense.json", params=params)
    assert answer.status_code == status, answer.text
    assert set(answer.json()["error"]) == {"code", "message"}


def test_network_unknown_image(module_client):
    answer = module_client.get(f"/api/models/lenet5/images/{'0' * 64}/network.json")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "unknown_image"
