"""Hooks on the shared model: always removed, never seen by another thread, never mutating the model;
and the pipeline's explicit display steps and error cases."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from server.errors import ApiError
from server.services.runtime.hooks import capture_layer, guided_relus
from server.services.saliency import METHODS, get_method
from server.services.saliency.scaling import magnitude_percentile, min_max
from tests.saliency_support import HAND_GEOMETRY, aligned_upsample, hooks_left, small_models

MODELS = small_models()


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_leaves_no_hooks_and_no_parameter_gradients(method: str) -> None:
    loaded, x = MODELS["small-resnet"]
    before = {k: v.clone() for k, v in loaded.module.state_dict().items()}
    explanation = get_method(method).explain(loaded, x, loaded.entry.target_layer, [1, 2])
    assert hooks_left(loaded.module) == 0
    assert all(p.grad is None and not p.requires_grad for p in loaded.module.parameters())
    assert all(torch.equal(before[k], v) for k, v in loaded.module.state_dict().items())
    assert not loaded.lock.locked()
    for scaled in explanation.maps:
        assert scaled.values.shape == x.shape[-2:]
        assert float(scaled.values.min()) >= 0.0 and float(scaled.values.max()) <= 1.0
        assert torch.isfinite(scaled.values).all()


def test_hooks_are_removed_when_the_forward_pass_raises() -> None:
    loaded, x = MODELS["small-resnet"]
    bad = torch.zeros(1, 5, 32, 32)  # wrong channel count: the first conv raises
    with pytest.raises(RuntimeError):
        get_method("gradcam").explain(loaded, bad, "layer2", [0])
    with pytest.raises(RuntimeError):
        get_method("guided-backprop").explain(loaded, bad, None, [0])
    assert hooks_left(loaded.module) == 0
    assert not loaded.lock.locked()


def test_a_layer_without_spatial_output_is_rejected_clearly() -> None:
    loaded, x = MODELS["small-resnet"]
    with pytest.raises(ApiError) as err:
        get_method("gradcam").explain(loaded, x, "fc", [0])
    assert err.value.status == 422 and err.value.code == "layer_not_spatial"
    assert "fc" in err.value.message
    assert hooks_left(loaded.module) == 0


def test_unknown_layer_method_and_target() -> None:
    loaded, x = MODELS["small-resnet"]
    with pytest.raises(ApiError) as err:
        get_method("gradcam").explain(loaded, x, "no.such.layer", [0])
    assert err.value.status == 404
    with pytest.raises(ApiError) as err:
        get_method("nope")
    assert err.value.status == 422 and err.value.code == "unknown_method"
    with pytest.raises(ApiError) as err:
        get_method("gradcam").explain(loaded, x, "layer2", [loaded.entry.num_classes])
    assert err.value.code == "invalid_target"


def test_capture_ignores_forward_passes_of_other_threads() -> None:
    loaded, x = MODELS["small-resnet"]
    layer = loaded.layer("layer2")
    seen: list[torch.Tensor] = []

    def other_request() -> None:
        with torch.inference_mode():  # as the predictions endpoint runs the shared model
            seen.append(loaded.module(x))

    with capture_layer(loaded, layer) as captured:
        worker = threading.Thread(target=other_request)
        worker.start()
        worker.join()
        assert captured.calls == 0  # the other thread's pass went by untouched
        loaded.module(x)
        assert captured.calls == 1
    assert captured.activation is not None and captured.activation.is_leaf and captured.activation.requires_grad
    with torch.inference_mode():
        torch.testing.assert_close(seen[0], loaded.module(x))
    assert hooks_left(loaded.module) == 0


def test_guided_hooks_cover_reused_relus() -> None:
    loaded, _ = MODELS["small-resnet"]
    with guided_relus(loaded) as hooked:
        assert hooked == sum(1 for m in loaded.module.modules() if isinstance(m, torch.nn.ReLU))
        assert hooks_left(loaded.module) == hooked
    assert hooks_left(loaded.module) == 0


def test_gradcam_display_is_relu_aligned_upsample_min_max_of_the_raw_map() -> None:
    loaded, x = MODELS["small-resnet"]
    explanation = get_method("gradcam").explain(loaded, x, "layer2", list(range(loaded.entry.num_classes)))
    compared = 0
    start, jump = HAND_GEOMETRY["small-resnet"]
    for raw, scaled in zip(explanation.raw, explanation.maps):
        up = torch.from_numpy(aligned_upsample(raw.clamp(min=0).numpy(), 32, start, jump)).float()
        if float(up.max()) <= float(up.min()):  # ReLU left nothing: the map is zeros, not NaN
            assert torch.equal(scaled.values, torch.zeros(32, 32))
            continue
        expected = (up - up.min()) / (up.max() - up.min())
        torch.testing.assert_close(scaled.values, expected, rtol=1e-5, atol=1e-6)
        assert scaled.low == pytest.approx(float(up.min())) and scaled.high == pytest.approx(float(up.max()))
        compared += 1
    assert compared >= 2
    # the Grad-CAM formula itself, from a hand-written forward and backward
    activation = loaded.module.layer2(loaded.module.down(loaded.module.layer1(loaded.module.stem(x)))).detach()
    activation.requires_grad_(True)
    logits = loaded.module.fc(torch.flatten(loaded.module.pool(activation), 1))
    (grad,) = torch.autograd.grad(logits[0, 3], activation)
    alpha = grad[0].mean(dim=(1, 2))
    expected_raw = (alpha[:, None, None] * activation[0].detach()).sum(0)
    torch.testing.assert_close(explanation.raw[3], expected_raw, rtol=1e-5, atol=1e-7)


def test_scaling_is_safe_on_constant_maps() -> None:
    zeros = torch.zeros(2, 8, 8)
    for scaled in min_max(zeros) + magnitude_percentile(zeros):
        assert torch.equal(scaled.values, torch.zeros(8, 8))
    spiky = torch.zeros(1, 20, 20)
    spiky[0, 0, 0] = 1000.0
    spiky[0, 5:15, 5:15] = 1.0
    (scaled,) = magnitude_percentile(spiky)
    # one extreme pixel does not flatten the rest: the percentile sets the scale
    assert float(scaled.values[10, 10]) == pytest.approx(1.0)
    assert np.isclose(scaled.high, 1.0)
