"""Grad-CAM taken apart (…/saliency/gradcam-steps.json + .npy): every step checked.

- α_k against an independent PyTorch autograd computation (a plain forward hook with ``retain_grad``
  on a fresh copy of the model, not the app's hook module);
- the weighted sum Σ_k α_k A^k against the API's own ``saliency/raw.npy`` for Grad-CAM;
- the A^k maps against the layer's ``activations.npy``;
- ReLU of the sum, upsampled and scaled as the app does, against ``saliency.npy``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.datasets import shapes
from server.services.saliency.scaling import min_max, upsample
from tests.conftest import load_npy, png_bytes

CASES = [("tinyvgg-shapes", None, None), ("tinyvgg-shapes", "block1.3", 4), ("lenet5", "features.3", 7)]


@pytest.fixture(scope="module")
def image_ids(module_client) -> dict[str, str]:
    ids = {}
    picture, _, _ = shapes.sample(11, "test")
    for name, pixels in {"rgb": np.asarray(picture), "grey": np.asarray(picture.convert("L").resize((28, 28)))}.items():
        response = module_client.post("/api/images", files={"file": ("s.png", png_bytes(pixels), "image/png")})
        assert response.status_code == 201, response.text
        ids[name] = response.json()["image_id"]
    return ids


def _get(client, url: str):
    response = client.get(url)
    assert response.status_code == 200, f"{url}: {response.text}"
    return response


def _reference(client, model: str, layer: str, target: int, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(α, A) by plain autograd on a copy of the model: hook keeps the layer's output and its gradient."""
    loaded = client.app.state.runtime.load(model, "auto")
    net = loaded.entry.build_untrained()
    net.load_state_dict(loaded.module.state_dict())
    net.eval()
    kept = {}

    def hook(module, inputs, output):
        output.retain_grad()
        kept["a"] = output
        return output.clone()  # later in-place ops (ReLU(inplace=True)) must not touch the kept tensor

    handle = dict(net.named_modules())[layer].register_forward_hook(hook)
    try:
        logits = net(x.clone().requires_grad_(True))
        logits[0, target].backward()
    finally:
        handle.remove()
    a = kept["a"]
    return a.grad[0].mean(dim=(-2, -1)).numpy(), a.detach()[0].numpy()


@pytest.mark.parametrize(("model", "layer", "target"), CASES)
def test_every_step_matches_pytorch_and_the_saliency_api(module_client, image_ids, model, layer, target) -> None:
    image = image_ids["rgb" if model == "tinyvgg-shapes" else "grey"]
    base = f"/api/models/{model}/images/{image}"
    query = "&".join(f"{k}={v}" for k, v in {"layer": layer, "target": target}.items() if v is not None)
    answer = _get(module_client, f"{base}/saliency/gradcam-steps.json?top=6&{query}").json()
    layer, target = answer["layer"], answer["target"]
    predictions = _get(module_client, f"{base}/predictions?top_k=1").json()["predictions"]
    if "target=" not in query:
        assert target == predictions[0]["index"]  # default: the top-1 class
    x = torch.from_numpy(load_npy(_get(module_client, f"{base}/input.npy").content))[None]
    alphas_ref, a_ref = _reference(module_client, model, layer, target, x)
    alphas = np.array(answer["alphas"], dtype=np.float32)
    np.testing.assert_allclose(alphas, alphas_ref, rtol=1e-4, atol=1e-6)
    assert answer["shape"] == list(a_ref.shape)
    # the sorted bar chart's order is by α_k, largest first
    assert [int(i) for i in np.argsort(-alphas, kind="stable")] == answer["alpha_order"]

    maps = load_npy(_get(module_client, answer["maps_url"]).content)
    top = [t["channel"] for t in answer["top"]]
    assert maps.shape == (len(top) + 2, *a_ref.shape[1:]) and len(top) == min(6, a_ref.shape[0])
    activations = load_npy(_get(module_client, f"{base}/layers/{layer}/activations.npy").content)
    np.testing.assert_allclose(maps[: len(top)], activations[top], rtol=1e-5, atol=1e-6)
    # top channels: the largest |α_k · Σ A^k|, with the numbers the page prints
    contrib = alphas_ref * a_ref.sum(axis=(1, 2))
    assert sorted(np.abs(contrib), reverse=True)[: len(top)] == pytest.approx([abs(t["contribution"]) for t in answer["top"]], rel=1e-4, abs=1e-6)
    for t in answer["top"]:
        assert t["alpha"] == pytest.approx(float(alphas_ref[t["channel"]]), rel=1e-4, abs=1e-7)
    total = sum(t["contribution"] for t in answer["top"]) + answer["rest"]["contribution"]
    assert total == pytest.approx(float(contrib.sum()), rel=1e-4, abs=1e-5)

    # Σ_k α_k A^k is the API's own signed Grad-CAM map, and ReLU of it gives saliency.npy
    weighted, relu = maps[-2], maps[-1]
    np.testing.assert_allclose(weighted, np.tensordot(alphas_ref, a_ref, axes=1), rtol=1e-4, atol=1e-5)
    raw = load_npy(_get(module_client, answer["raw_url"]).content)
    np.testing.assert_allclose(weighted, raw, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(relu, np.maximum(weighted, 0))
    assert answer["relu"]["max"] == pytest.approx(float(relu.max()), rel=1e-6)
    shown = load_npy(_get(module_client, f"{base}/saliency.npy?method=gradcam&layer={layer}&target={target}").content)
    loaded = module_client.app.state.runtime.load(model, "auto")
    (scaled,) = min_max(upsample(torch.from_numpy(relu)[None], shown.shape, loaded.geometry(layer)))
    np.testing.assert_allclose(scaled.values.numpy(), shown, atol=1e-5)


def test_bad_requests_get_clear_errors(module_client, image_ids) -> None:
    base = f"/api/models/tinyvgg-shapes/images/{image_ids['rgb']}/saliency/gradcam-steps.json"
    cases = {
        f"{base}?layer=nope": (404, "unknown_layer"),
        f"{base}?target=10": (404, "invalid_target"),
        f"{base}?top=0": (422, None),
        f"{base}?top=33": (422, None),
        f"{base}?layer=classifier.1": (422, "layer_not_spatial"),
        f"/api/models/tinyvgg-shapes/images/{'0' * 64}/saliency/gradcam-steps.json": (404, None),
    }
    for url, (status, code) in cases.items():
        response = module_client.get(url)
        assert response.status_code == status, (url, response.text)
        error = response.json()["error"]
        assert error["message"]
        if code:
            assert error["code"] == code


def test_cache_is_bounded_and_evicts(module_client, image_ids) -> None:
    from server.services.saliency.gradcam_steps import GradCamStepsService

    app = module_client.app
    loaded = app.state.runtime.load("tinyvgg-shapes", "auto")
    one = app.state.gradcam_steps.steps(loaded, app.state.gradcam_steps.key(loaded, image_ids["rgb"], loaded.named_layer(loaded.entry.target_layer), 0)).nbytes
    small = GradCamStepsService(app.state.inputs, None, budget_bytes=int(2.5 * one))
    results = [small.steps(loaded, small.key(loaded, image_ids["rgb"], loaded.named_layer(loaded.entry.target_layer), t)) for t in range(5)]
    assert [r.target for r in results] == list(range(5))
    assert 0 < small.nbytes <= small.budget_bytes and len(small.cache) == 2
    # the most recent ones are kept: asking again returns the same object without recomputing
    assert small.steps(loaded, small.key(loaded, image_ids["rgb"], loaded.named_layer(loaded.entry.target_layer), 4)) is results[4]
