"""The saliency endpoints: values checked against PyTorch/Captum, defaults, top-k, PNGs, errors, memory."""

from __future__ import annotations

import gc
import io
import os

import numpy as np
import pytest
import torch
from captum.attr import LayerGradCam
from PIL import Image

from models.datasets import shapes
from server.services.rendering.colormaps import apply_colormap
from server.services.saliency import METHODS
from tests.conftest import load_npy, png_bytes
from tests.saliency_support import aligned_upsample

MODEL = "tinyvgg-shapes"


@pytest.fixture(scope="module")
def image_id(module_client) -> str:
    picture, _, _ = shapes.sample(7, "test")
    response = module_client.post("/api/images", files={"file": ("s.png", png_bytes(np.asarray(picture)), "image/png")})
    assert response.status_code == 201, response.text
    return response.json()["image_id"]


def _base(image_id: str, model: str = MODEL) -> str:
    return f"/api/models/{model}/images/{image_id}"


def _npy(client, url: str) -> np.ndarray:
    response = client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["x-convscope-weights"] in ("trained", "untrained")
    return load_npy(response.content)


def _reference_gradcam(client, image_id: str, weights: str, layer: str, target: int) -> np.ndarray:
    """Captum LayerGradCam (ReLU at the layer) on the app's model and input tensor, sampled at each pixel's
    receptive-field centre as /api/models/{model} reports it, then min–max scaled."""
    runtime = client.app.state.runtime
    loaded = runtime.load(MODEL, weights)
    x = torch.from_numpy(_npy(client, f"{_base(image_id)}/input.npy?weights={weights}"))[None]
    model = type(loaded.module)(num_classes=loaded.entry.num_classes)
    model.load_state_dict(loaded.module.state_dict())
    model.eval()
    layer_module = dict(model.named_modules())[layer]
    attribution = LayerGradCam(model, layer_module).attribute(
        x.requires_grad_(True), target=target, relu_attributions=True
    )
    layers = {entry["name"]: entry for entry in client.get(f"/api/models/{MODEL}").json()["layers"]}
    field = layers[layer]["receptive_field"]
    up = aligned_upsample(attribution.detach()[0, 0].numpy(), x.shape[-1], field["start"][0], field["jump"][0])
    return (up - up.min()) / max(up.max() - up.min(), 1e-12)


@pytest.mark.parametrize("weights", ["untrained", "auto"])
def test_saliency_npy_defaults_to_top1_at_the_last_conv_block(module_client, image_id, weights) -> None:
    values = _npy(module_client, f"{_base(image_id)}/saliency.npy?weights={weights}")
    assert values.dtype == np.float32 and values.shape == (64, 64)
    assert values.min() >= 0.0 and values.max() <= 1.0
    predictions = module_client.get(f"{_base(image_id)}/predictions?weights={weights}&top_k=1").json()["predictions"]
    top1 = predictions[0]["index"]
    explicit = _npy(
        module_client, f"{_base(image_id)}/saliency.npy?method=gradcam&layer=block2.3&target={top1}&weights={weights}"
    )
    np.testing.assert_array_equal(values, explicit)
    used = module_client.get(f"{_base(image_id)}/saliency.npy?weights={weights}").headers["x-convscope-weights"]
    reference = _reference_gradcam(module_client, image_id, used, "block2.3", top1)
    assert reference.max() > 0
    np.testing.assert_allclose(values, reference, atol=1e-4)


def test_other_layer_and_target_against_captum(module_client, image_id) -> None:
    values = _npy(module_client, f"{_base(image_id)}/saliency.npy?layer=block1.3&target=4&weights=untrained")
    reference = _reference_gradcam(module_client, image_id, "untrained", "block1.3", 4)
    np.testing.assert_allclose(values, reference, atol=1e-4)


def test_top_k_json_matches_predictions_and_single_maps(module_client, image_id) -> None:
    base = _base(image_id)
    answer = module_client.get(f"{base}/saliency/topk.json?weights=untrained")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert answer.headers["x-convscope-weights"] == "untrained" and body["weights_used"] == "untrained"
    assert body["layer"] == "block2.3" and body["method"]["name"] == "gradcam"
    assert len(body["legend"]["stops"]) >= 2
    predictions = module_client.get(f"{base}/predictions?weights=untrained").json()["predictions"]
    assert [c["index"] for c in body["classes"]] == [p["index"] for p in predictions]
    assert [c["probability"] for c in body["classes"]] == pytest.approx([p["probability"] for p in predictions])
    packed = _npy(module_client, body["npy"])
    assert packed.shape == (5, 64, 64)
    for i, item in enumerate(body["classes"]):
        single = _npy(module_client, item["urls"]["npy"])
        np.testing.assert_allclose(packed[i], single, atol=1e-5)
        raw = _npy(module_client, item["urls"]["raw"])
        assert raw.shape == tuple(item["raw_shape"]) == (26, 26)
        # 1 on the map stands for the upsampled ReLU(raw)'s peak, which bilinear interpolation cannot raise
        assert 0.0 <= item["high"] <= float(np.maximum(raw, 0).max()) + 1e-6
        assert item["empty"] == (item["high"] <= item["low"])


def test_png_overlay_is_the_colour_map_blended_over_the_input(module_client, image_id) -> None:
    base = _base(image_id)
    values = _npy(module_client, f"{base}/saliency.npy?weights=untrained&target=2")
    alone = module_client.get(f"{base}/saliency.png?weights=untrained&target=2&opacity=1&colormap=magma")
    assert alone.status_code == 200 and alone.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(alone.content))), apply_colormap(values, "magma"))
    none = module_client.get(f"{base}/saliency.png?weights=untrained&target=2&opacity=0")
    picture = module_client.get(f"{base}/input.png?weights=untrained")
    np.testing.assert_array_equal(
        np.asarray(Image.open(io.BytesIO(none.content))),
        np.asarray(Image.open(io.BytesIO(picture.content)).convert("RGB")),
    )
    half = np.asarray(
        Image.open(io.BytesIO(module_client.get(f"{base}/saliency.png?weights=untrained&target=2").content))
    )
    expected = 0.5 * np.asarray(Image.open(io.BytesIO(picture.content)).convert("RGB"), float) + 0.5 * apply_colormap(
        values, "viridis"
    )
    assert np.abs(half.astype(float) - expected).max() <= 1.0


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_answers_a_map(module_client, image_id, method) -> None:
    base = _base(image_id)
    values = _npy(module_client, f"{base}/saliency.npy?method={method}&target=1&weights=untrained")
    assert values.shape == (64, 64) and values.min() >= 0 and values.max() <= 1 and np.isfinite(values).all()
    info = module_client.get(f"{base}/saliency.json?method={method}&target=1&weights=untrained").json()
    assert info["map"]["index"] == 1 and info["method"]["name"] == method
    assert (info["layer"] is not None) == METHODS[method].uses_layer


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("method=nope", 422, "unknown_method"),
        ("layer=no.such", 404, "unknown_layer"),
        ("layer=classifier.1", 422, "layer_not_spatial"),
        ("method=layercam&layer=classifier", 422, "layer_not_spatial"),
        ("target=10", 404, "invalid_target"),
        ("target=-1", 422, "validation_error"),
        ("target=abc", 422, "validation_error"),
        ("weights=sometimes", 422, "validation_error"),
    ],
)
def test_bad_parameters_get_clear_errors(module_client, image_id, query, status, code) -> None:
    for suffix in ("saliency.npy", "saliency.png", "saliency.json", "saliency/raw.npy"):
        response = module_client.get(f"{_base(image_id)}/{suffix}?{query}")
        assert response.status_code == status, (suffix, response.text)
        error = response.json()["error"]
        assert error["code"] == code and error["message"]


def test_unknown_model_image_colormap_and_opacity(module_client, image_id) -> None:
    assert module_client.get(f"{_base(image_id, 'nope')}/saliency.npy").json()["error"]["code"] == "unknown_model"
    missing = module_client.get(f"{_base('0' * 64)}/saliency.npy")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_image"
    assert module_client.get(f"{_base(image_id)}/saliency.png?colormap=rainbow").status_code == 422
    assert module_client.get(f"{_base(image_id)}/saliency.png?opacity=1.5").status_code == 422
    assert module_client.get(f"{_base(image_id)}/saliency/topk.json?k=0").status_code == 422


def test_methods_listing(module_client) -> None:
    body = module_client.get("/api/saliency/methods").json()
    assert [m["name"] for m in body["methods"]] == list(METHODS)
    assert body["default"] == "gradcam"


def test_progress_of_an_idle_run(module_client, image_id) -> None:
    body = module_client.get(f"{_base(image_id)}/saliency/progress?method=scorecam").json()
    assert body == {"state": "idle", "done": 0, "total": 0}


def _rss_mb() -> float:
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss / 2**20


def test_many_requests_do_not_grow_memory(module_client, image_id) -> None:
    base = _base(image_id)
    methods = ["gradcam", "gradcampp", "layercam", "gradient", "guided-backprop", "eigencam"]

    def burst(n: int, offset: int) -> None:
        for i in range(n):
            # targets × methods × layers rotate, so most requests compute rather than hit the cache
            layer = ("block2.3", "block2.1", "block1.3")[i % 3]
            url = f"{base}/saliency.npy?method={methods[i % len(methods)]}&target={(i + offset) % 10}&layer={layer}"
            assert module_client.get(url).status_code == 200

    burst(60, 0)
    gc.collect()
    before = _rss_mb()
    burst(200, 3)
    gc.collect()
    growth = _rss_mb() - before
    assert growth <= 20.0, f"resident memory grew {growth:.1f} MB over 200 saliency requests"
