"""Feature-map endpoints: values equal PyTorch on input.npy, atlases match their JSON, errors are 4xx."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from models.registry import get_entry


def _npy(content: bytes) -> np.ndarray:
    return np.load(io.BytesIO(content), allow_pickle=False)


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def image_id(module_client) -> str:
    rng = np.random.default_rng(7)
    picture = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    response = module_client.post("/api/images", files={"file": ("p.png", _png(picture), "image/png")})
    assert response.status_code == 201, response.text
    return response.json()["image_id"]


def _base(model: str, image_id: str) -> str:
    return f"/api/models/{model}/images/{image_id}"


def _get(client, url: str, **params):
    response = client.get(url, params=params)
    assert response.status_code == 200, response.text
    return response


def test_resnet18_activations_equal_a_reference_forward_on_input_npy(module_client, image_id) -> None:
    base = _base("resnet18", image_id)
    x = torch.from_numpy(_npy(_get(module_client, f"{base}/input.npy", weights="untrained").content))[None]
    model = get_entry("resnet18").build(trained=False)
    with torch.no_grad():
        conv1 = model.conv1(x)
        stem = model.maxpool(model.relu(model.bn1(conv1)))
        layer1 = model.layer1(stem)
        logits = model(x)
        first_conv = model.layer1[0].conv1(stem)
    expected = {"conv1": conv1, "maxpool": stem, "layer1": layer1, "layer1.0.conv1": first_conv,
                "fc": logits}
    for layer, tensor in expected.items():
        response = _get(module_client, f"{base}/layers/{layer}/activations.npy", weights="untrained")
        assert response.headers["x-convscope-weights"] == "untrained"
        assert "max-age" in response.headers["cache-control"] and response.headers["etag"]
        got = _npy(response.content)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, tensor[0].numpy(), atol=1e-4, rtol=1e-4, err_msg=layer)


def test_bundled_model_every_layer_equals_the_reference(module_client, image_id) -> None:
    base = _base("tinyvgg-shapes", image_id)
    response = _get(module_client, f"{base}/input.npy")
    variant = response.headers["x-convscope-weights"]
    x = torch.from_numpy(_npy(response.content))[None]
    model = get_entry("tinyvgg-shapes").build(trained=variant == "trained")
    with torch.no_grad():
        for block in ("block1", "block2"):
            for index, module in enumerate(getattr(model, block)):
                x = module(x)
                got = _npy(_get(module_client, f"{base}/layers/{block}.{index}/activations.npy").content)
                np.testing.assert_allclose(got, x[0].numpy(), atol=1e-5, rtol=1e-5)
        logits = model.classifier(x)
    got = _npy(_get(module_client, f"{base}/layers/classifier.1/activations.npy").content)
    assert got.shape == (logits.shape[1],)
    np.testing.assert_allclose(got, logits[0].numpy(), atol=1e-5, rtol=1e-5)


def test_atlas_png_matches_its_json_and_the_data(module_client, image_id) -> None:
    layer = f"{_base('resnet18', image_id)}/layers/layer1.0.bn1"
    values = _npy(_get(module_client, f"{layer}/activations.npy", weights="untrained").content)
    for scale in ("layer", "channel"):
        meta = _get(module_client, f"{layer}/atlas.json", weights="untrained", scale=scale).json()
        png = _get(module_client, f"{layer}/atlas.png", weights="untrained", scale=scale)
        image = Image.open(io.BytesIO(png.content))
        assert image.size == (meta["grid"]["columns"] * meta["tile"]["width"], meta["grid"]["rows"] * meta["tile"]["height"])
        assert (meta["tile"]["height"], meta["tile"]["width"]) == values.shape[1:] == (56, 56)
        assert meta["grid"]["columns"] * meta["grid"]["rows"] >= meta["channels"] == 64
        assert png.headers["x-convscope-grid"] == f"{meta['grid']['columns']}x{meta['grid']['rows']}"
        assert meta["data_range"] == pytest.approx([float(values.min()), float(values.max())])
        assert meta["colormap"] == "diverging"  # batch norm output is signed
        if scale == "layer":
            m = float(np.abs(values).max())
            assert meta["tiles"]["low"] == pytest.approx([-m] * 64) and meta["tiles"]["high"] == pytest.approx([m] * 64)
        else:
            m = np.abs(values).reshape(64, -1).max(1)
            np.testing.assert_allclose(meta["tiles"]["high"], m, rtol=1e-6)
            np.testing.assert_allclose(meta["tiles"]["low"], -m, rtol=1e-6)
    again = _get(module_client, f"{layer}/atlas.png", weights="untrained", scale="channel")
    assert again.content == png.content and again.headers["etag"] == png.headers["etag"]


def test_channel_png_npy_and_stats(module_client, image_id) -> None:
    layer = f"{_base('resnet18', image_id)}/layers/relu"
    values = _npy(_get(module_client, f"{layer}/activations.npy", weights="untrained").content)
    channel = _get(module_client, f"{layer}/channels/5.png", weights="untrained")
    assert Image.open(io.BytesIO(channel.content)).size == (112, 112)
    low, high = (float(v) for v in channel.headers["x-convscope-range"].split(","))
    assert (low, high) == pytest.approx((float(values[5].min()), float(values[5].max())))
    assert channel.headers["x-convscope-colormap"] == "viridis"  # after ReLU: one sign
    np.testing.assert_array_equal(_npy(_get(module_client, f"{layer}/channels/5.npy", weights="untrained").content),
                                  values[5])
    stats = _get(module_client, f"{layer}/stats.json", weights="untrained").json()
    assert stats["channels"] == 64 and stats["shape"] == [64, 112, 112]
    flat = torch.from_numpy(values).flatten(1)
    np.testing.assert_allclose(stats["mean"], flat.mean(1).numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats["max"], flat.amax(1).numpy())
    np.testing.assert_allclose(stats["positive_fraction"], (flat > 0).float().mean(1).numpy(), atol=1e-6)


def test_overview_and_global_scale(module_client, image_id) -> None:
    base = _base("lenet5", image_id)
    overview = _get(module_client, f"{base}/overview.json").json()
    names = [layer["name"] for layer in overview["layers"]]
    model = module_client.get("/api/models/lenet5").json()
    assert names == [layer["name"] for layer in model["layers"]]
    lows, highs = [], []
    for layer in overview["layers"]:
        values = _npy(_get(module_client, f"{base}/layers/{layer['name']}/activations.npy").content)
        assert layer["min"] == pytest.approx(float(values.min()))
        assert layer["max"] == pytest.approx(float(values.max()))
        lows.append(values.min())
        highs.append(values.max())
    assert overview["global_range"] == pytest.approx([float(min(lows)), float(max(highs))])
    strip = Image.open(io.BytesIO(_get(module_client, f"{base}/overview.png").content))
    rows = [layer["row"] for layer in overview["layers"] if layer["row"] is not None]
    assert rows == list(range(len(rows)))
    assert strip.size == (overview["thumbs_per_layer"] * overview["thumb_size"], len(rows) * overview["thumb_size"])
    meta = _get(module_client, f"{base}/layers/features.0/atlas.json", scale="global").json()
    m = max(abs(overview["global_range"][0]), abs(overview["global_range"][1]))
    assert meta["scale"] == "global" and meta["tiles"]["high"][0] == pytest.approx(m)


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/layers/nope/atlas.png", {}, 404, "unknown_layer"),
        ("/layers/features.0/channels/6.png", {}, 404, "unknown_channel"),
        ("/layers/features.0/channels/-1.npy", {}, 422, "validation_error"),
        ("/layers/features.0/channels/x.png", {}, 422, "validation_error"),
        ("/layers/features.0/atlas.png", {"scale": "weird"}, 422, "validation_error"),
        ("/layers/features.0/atlas.json", {"colormap": "rainbow"}, 422, "invalid_colormap"),
        ("/layers/features.0/atlas.png", {"columns": 0}, 422, "validation_error"),
        ("/layers/features.0/activations.npy", {"weights": "best"}, 422, "validation_error"),
    ],
)
def test_bad_parameters_are_clear_4xx(module_client, image_id, path, params, status, code) -> None:
    response = module_client.get(_base("lenet5", image_id) + path, params=params)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_unknown_image_and_model(module_client) -> None:
    response = module_client.get(f"/api/models/lenet5/images/{'0' * 64}/layers/features.0/activations.npy")
    assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_image"
    response = module_client.get(f"/api/models/nope/images/{'0' * 64}/layers/features.0/atlas.png")
    assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_model"


def test_one_forward_pass_serves_the_layer_and_the_overview(module_client, monkeypatch) -> None:
    rng = np.random.default_rng(11)
    data = _png(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    image_id = module_client.post("/api/images", files={"file": ("q.png", data, "image/png")}).json()["image_id"]
    base = _base("tinyvgg-shapes", image_id)
    store = module_client.app.state.activations
    before = store.captures
    _get(module_client, f"{base}/layers/block2.0/atlas.png")
    assert store.captures == before + 1
    import server.services.feature_maps.layer_overview as layer_overview

    def no_second_pass(*_args, **_kwargs):
        raise AssertionError("the overview ran the model again")

    monkeypatch.setattr(layer_overview, "build_overview", no_second_pass)
    overview = _get(module_client, f"{base}/overview.json").json()
    assert [layer["name"] for layer in overview["layers"]][:2] == ["block1", "block1.0"]
    for name in ("block1.0", "block2.2", "classifier.1"):  # all other layers came from the same pass
        _get(module_client, f"{base}/layers/{name}/activations.npy")
    assert store.captures == before + 1


def test_conv_output_follows_from_the_api_own_numbers(module_client, image_id) -> None:
    """activations.npy of a conv layer == F.conv2d(activations.npy of the layer before, weights.npy, bias.npy)."""
    import torch.nn.functional as F

    layers = {layer["name"]: layer for layer in module_client.get("/api/models/tinyvgg-shapes").json()["layers"]}
    base = _base("tinyvgg-shapes", image_id)
    for previous, conv in (("block1.1", "block1.2"), ("block1.4", "block2.0")):
        x = torch.from_numpy(_npy(_get(module_client, f"{base}/layers/{previous}/activations.npy").content))[None]
        w = torch.from_numpy(_npy(_get(module_client, f"/api/models/tinyvgg-shapes/layers/{conv}/weights.npy").content))
        b = torch.from_numpy(_npy(_get(module_client, f"/api/models/tinyvgg-shapes/layers/{conv}/bias.npy").content))
        spec = layers[conv]
        y = F.conv2d(x, w, b, tuple(spec["stride"]), tuple(spec["padding"]), tuple(spec["dilation"]), spec["groups"])
        got = _npy(_get(module_client, f"{base}/layers/{conv}/activations.npy").content)
        np.testing.assert_allclose(got, y[0].numpy(), atol=1e-5, rtol=1e-5, err_msg=conv)


def test_activation_cache_budget_comes_from_the_settings(tmp_path) -> None:
    from fastapi.testclient import TestClient

    from server.main import create_app
    from server.settings import Settings

    budget = 300_000
    with TestClient(create_app(Settings(storage_dir=tmp_path / "images", activation_cache_bytes=budget))) as client:
        data = _png(np.random.default_rng(3).integers(0, 256, (50, 50, 3), dtype=np.uint8))
        image_id = client.post("/api/images", files={"file": ("b.png", data, "image/png")}).json()["image_id"]
        for layer in ("block1.0", "block2.2", "classifier.1", "block1.2"):
            _get(client, f"{_base('tinyvgg-shapes', image_id)}/layers/{layer}/atlas.png")
            store = client.app.state.activations
            assert store.budget_bytes == budget and 0 < store.nbytes <= budget
