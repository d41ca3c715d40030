"""Step-through traces over HTTP: every total equals the layer's output (from an independent forward pass
with our own hooks, and from activations.npy) to 1e-5 relative; softmax equals torch.softmax."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from models.registry import get_entry
from tests.conftest import load_npy, png_bytes

CONV_CASES = [
    ("tinyvgg-shapes", "block1.0"),  # the 3×3×3 RGB kernel of the course
    ("tinyvgg-shapes", "block2.2"),
    ("lenet5", "features.0"),  # padding 2
    ("lenet5", "features.3"),
    ("mnist-shallow", "conv1"),  # Keras 'same' through a ZeroPad2d, stride 2
    ("resnet18", "conv1"),  # 7×7, stride 2, padding 3, then batch norm and ReLU
    ("resnet18", "layer4.0.conv1"),  # 256 input channels: summarised
    ("mobilenet_v3_small", "features.1.block.0.0"),  # depthwise, stride 2
    ("efficientnet_lite0", "conv_stem"),  # TensorFlow 'same' padding done in forward (timm's Conv2dSame)
    ("efficientnet_lite0", "blocks.1.0.conv_dw"),  # depthwise 3×3, stride 2, asymmetric 'same'
    ("efficientnet_lite0", "blocks.1.0.conv_pwl"),  # 1×1 projection, 96 input channels: summarised
]
POOL_CASES = [("tinyvgg-shapes", "block1.4"), ("lenet5", "features.2"), ("resnet18", "maxpool"),
              ("resnet18", "avgpool"), ("squeezenet1_1", "features.2")]


@pytest.fixture(scope="module")
def image_id(module_client) -> str:
    rng = np.random.default_rng(7)
    picture = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    picture[16:48, 20:44] = [250, 200, 40]  # a shape, so the maps are not pure noise
    response = module_client.post("/api/images", files={"file": ("t.png", png_bytes(picture), "image/png")})
    assert response.status_code == 201
    return response.json()["image_id"]


_references: dict[tuple[str, str], dict[str, torch.Tensor]] = {}


def reference(client, model_id: str, image_id: str) -> tuple[str, dict[str, torch.Tensor]]:
    """Every leaf module's output from an independent build of the model (first call of each module)."""
    variant = client.get(f"/api/models/{model_id}").json()["weights_used"]
    key = (model_id, variant)
    if key not in _references:
        entry = get_entry(model_id)
        model = entry.build(trained=variant == "trained")
        picture = Image.open(io.BytesIO(client.get(f"/api/images/{image_id}").content)).convert("RGB")
        x = entry.make_preprocess()(picture)[None]
        outs: dict[str, torch.Tensor] = {}

        def keep_first(name: str):
            def hook(_m, _i, output) -> None:  # returns None: a returned value would replace the output
                if name not in outs:
                    outs[name] = output.detach().clone()
            return hook

        handles = [m.register_forward_hook(keep_first(n)) for n, m in model.named_modules() if n]
        try:
            with torch.no_grad():
                outs["__logits__"] = model(x)
        finally:
            for h in handles:
                h.remove()
        _references[key] = {k: v[0] for k, v in outs.items()}
    return variant, _references[key]


def _positions(shape: list[int], count: int = 6) -> list[tuple[int, int, int]]:
    c, h, w = shape
    rng = np.random.default_rng(sum(shape))
    corners = [(0, 0, 0), (c - 1, h - 1, w - 1), (c // 2, 0, w - 1)]
    return corners + [(int(rng.integers(c)), int(rng.integers(h)), int(rng.integers(w))) for _ in range(count)]


@pytest.mark.parametrize("model_id,layer", CONV_CASES)
def test_conv_trace_equals_layer_output(module_client, image_id: str, model_id: str, layer: str) -> None:
    variant, ref = reference(module_client, model_id, image_id)
    out = ref[layer]
    activations = module_client.get(f"/api/models/{model_id}/images/{image_id}/layers/{layer}/activations.npy")
    served = load_npy(activations.content) if activations.status_code == 200 else None
    for channel, y, x in _positions(list(out.shape)):
        response = module_client.get(f"/api/models/{model_id}/images/{image_id}/layers/{layer}/trace",
                                     params={"channel": channel, "y": y, "x": x, "top": 4})
        assert response.status_code == 200, response.text
        assert response.headers["X-ConvScope-Weights"] == variant
        trace = response.json()
        want = float(out[channel, y, x])
        scale = sum(abs(p) for c in trace["channels"] for p in c["products"]) + abs(trace["bias"])
        assert abs(trace["total"] - want) <= 1e-5 * max(abs(want), scale * 1e-2, 1e-6), (channel, y, x)
        if served is not None:
            assert abs(trace["total"] - float(served[channel, y, x])) <= 1e-5 * max(abs(want), scale * 1e-2, 1e-6)
        assert len(trace["channels"]) <= 4
        k = trace["geometry"]["kernel_shape"]
        assert all(len(c["products"]) == k[0] * k[1] for c in trace["channels"])


def test_large_layer_is_summarised(module_client, image_id: str) -> None:
    url = f"/api/models/resnet18/images/{image_id}/layers/layer4.0.conv1/trace"
    trace = module_client.get(url, params={"channel": 3, "y": 1, "x": 2, "top": 5}).json()
    assert trace["input_shape"][0] == 256
    assert len(trace["channels"]) == 5 and trace["rest"]["channels"] == 251
    sums = [abs(c["sum"]) for c in trace["channels"]]
    assert sums == sorted(sums, reverse=True)
    assert sum(c["sum"] for c in trace["channels"]) + trace["rest"]["sum"] == pytest.approx(trace["sum_of_channels"])
    # batch norm and ReLU follow, and the chain ends at the value the block's ReLU produced
    assert [a["type"] for a in trace["after"]] == ["BatchNorm2d", "ReLU"]
    assert trace["final"] == max(trace["after"][0]["output"], 0.0)


def test_rgb_kernel_and_relu(module_client, image_id: str) -> None:
    variant, ref = reference(module_client, "tinyvgg-shapes", image_id)
    trace = module_client.get(f"/api/models/tinyvgg-shapes/images/{image_id}/layers/block1.0/trace",
                              params={"channel": 2, "y": 10, "x": 20}).json()
    assert [c["index"] for c in trace["channels"]] == [0, 1, 2] and trace["rest"] is None
    assert trace["after"][0]["layer"] == "block1.1"
    assert trace["final"] == pytest.approx(float(ref["block1.1"][2, 10, 20]), abs=1e-6)


@pytest.mark.parametrize("model_id,layer", POOL_CASES)
def test_pool_trace_equals_layer_output(module_client, image_id: str, model_id: str, layer: str) -> None:
    _variant, ref = reference(module_client, model_id, image_id)
    out = ref[layer]
    for channel, y, x in _positions(list(out.shape), 4):
        trace = module_client.get(f"/api/models/{model_id}/images/{image_id}/layers/{layer}/trace",
                                  params={"channel": channel, "y": y, "x": x}).json()
        assert trace["kind"] == "pool"
        assert trace["result"] == pytest.approx(float(out[channel, y, x]), rel=1e-5, abs=1e-6)


def test_activation_trace(module_client, image_id: str) -> None:
    _variant, ref = reference(module_client, "lenet5", image_id)
    trace = module_client.get(f"/api/models/lenet5/images/{image_id}/layers/features.1/trace",
                              params={"channel": 4, "y": 7, "x": 9}).json()
    assert trace["kind"] == "activation" and trace["formula"] == "tanh(x)"
    assert trace["output"] == pytest.approx(np.tanh(trace["input"]), rel=1e-6)
    assert trace["output"] == pytest.approx(float(ref["features.1"][4, 7, 9]), abs=1e-7)


def test_softmax_equals_torch(module_client, image_id: str) -> None:
    _variant, ref = reference(module_client, "tinyvgg-shapes", image_id)
    body = module_client.get(f"/api/models/tinyvgg-shapes/images/{image_id}/softmax", params={"top": 3}).json()
    probs = torch.softmax(ref["__logits__"].double(), 0)
    assert len(body["classes"]) == 3 and body["rest"]["classes"] == body["num_classes"] - 3
    for row in body["classes"]:
        assert row["probability"] == pytest.approx(float(probs[row["index"]]), rel=1e-5)
        assert row["exponential"] == pytest.approx(np.exp(row["logit"] - body["max_logit"]), rel=1e-9)
    predictions = module_client.get(f"/api/models/tinyvgg-shapes/images/{image_id}/predictions").json()
    assert [p["index"] for p in predictions["predictions"][:3]] == [c["index"] for c in body["classes"]]


def test_maps_for_the_animation(module_client, image_id: str) -> None:
    _variant, ref = reference(module_client, "tinyvgg-shapes", image_id)
    base = f"/api/models/tinyvgg-shapes/images/{image_id}/layers/block1.2/trace"
    layer_in = load_npy(module_client.get(base + "/input.npy", params={"channel": 3}).content)
    np.testing.assert_array_equal(layer_in, ref["block1.1"][3].numpy())
    out = load_npy(module_client.get(base + "/output.npy", params={"channel": 1}).content)
    np.testing.assert_array_equal(out, ref["block1.2"][1].numpy())
    final = load_npy(module_client.get(base + "/output.npy", params={"channel": 1, "stage": "final"}).content)
    np.testing.assert_array_equal(final, ref["block1.3"][1].numpy())


@pytest.mark.parametrize("path,params,status,code", [
    ("/api/models/lenet5/images/{img}/layers/nope/trace", {}, 404, "unknown_layer"),
    ("/api/models/nope/images/{img}/layers/features.0/trace", {}, 404, "unknown_model"),
    ("/api/models/lenet5/images/{img}/layers/features.0/trace", {"channel": 6}, 404, "unknown_channel"),
    ("/api/models/lenet5/images/{img}/layers/features.0/trace", {"y": 28}, 404, "unknown_position"),
    ("/api/models/lenet5/images/{img}/layers/features.0/trace", {"x": -1}, 422, "validation_error"),
    ("/api/models/lenet5/images/{img}/layers/features.0/trace", {"top": 0}, 422, "validation_error"),
    ("/api/models/lenet5/images/{img}/layers/classifier.1/trace", {}, 422, "layer_not_traceable"),
    ("/api/models/lenet5/images/{img}/layers/features/trace", {}, 422, "layer_not_traceable"),
    ("/api/models/lenet5/images/" + "0" * 64 + "/layers/features.0/trace", {}, 404, "unknown_image"),
    ("/api/models/lenet5/images/{img}/layers/features.0/trace/input.npy", {"channel": 1}, 404, "unknown_channel"),
])
def test_bad_requests_are_clear_errors(module_client, image_id: str, path: str, params: dict, status: int,
                                       code: str) -> None:
    response = module_client.get(path.format(img=image_id), params=params)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_repeated_traces_reuse_the_capture(module_client, image_id: str) -> None:
    base = f"/api/models/lenet5/images/{image_id}/layers/features.3/trace"
    first = module_client.get(base, params={"channel": 0, "y": 0, "x": 0}).json()
    cache = module_client.app.state.step_through.cache
    size, runs = len(cache), cache.stats.computations
    for y, x in itertools.product(range(3), range(3)):
        assert module_client.get(base, params={"channel": 1, "y": y, "x": x}).status_code == 200
    assert len(cache) == size and cache.stats.computations == runs and first["kind"] == "conv"
