"""Top-k: the k Grad-CAMs from one forward and one batched backward equal k separate Grad-CAM runs."""

from __future__ import annotations

import pytest
import torch

from server.services.runtime.outputs import predictions_from_logits
from server.services.saliency import get_method
from server.services.saliency.base import TopK
from server.services.saliency.topk import predictions_with_saliency
from tests.saliency_support import hooks_left, small_models

MODELS = small_models()


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "xgradcam", "layercam"])
def test_top_k_maps_equal_separate_runs(name: str, method: str) -> None:
    loaded, x = MODELS[name]
    k = 5
    answer = predictions_with_saliency(loaded, x, k=k, method=method)
    assert [p["index"] for p in answer.predictions] == answer.explanation.targets
    with torch.inference_mode():
        expected = predictions_from_logits(loaded, loaded.module(x)[0], k)
    assert [(p["index"], p["label"]) for p in answer.predictions] == [(p["index"], p["label"]) for p in expected]
    assert [p["probability"] for p in answer.predictions] == pytest.approx([p["probability"] for p in expected])
    for i, target in enumerate(answer.explanation.targets):
        single = get_method(method).explain(loaded, x, loaded.entry.target_layer, [target])
        scale = float(single.raw.abs().max())
        assert scale > 0
        torch.testing.assert_close(answer.explanation.raw[i], single.raw[0], rtol=1e-5, atol=1e-5 * scale)
        torch.testing.assert_close(answer.explanation.maps[i].values, single.maps[0].values, rtol=1e-4, atol=1e-4)
    # the maps differ between classes: a batched backward that reused one class's gradient would not
    assert not torch.allclose(answer.explanation.raw[0], answer.explanation.raw[1])
    assert hooks_left(loaded.module) == 0


def test_top_k_runs_one_forward_and_one_backward() -> None:
    loaded, x = MODELS["small-resnet"]
    forwards = []
    backward_calls = []
    handle = loaded.module.register_forward_hook(lambda m, i, o: forwards.append(1))
    original_grad = torch.autograd.grad

    def counting_grad(*args, **kwargs):
        backward_calls.append(kwargs.get("is_grads_batched", False))
        return original_grad(*args, **kwargs)

    torch.autograd.grad = counting_grad
    try:
        answer = predictions_with_saliency(loaded, x, k=5)
    finally:
        torch.autograd.grad = original_grad
        handle.remove()
    assert len(answer.explanation.targets) == 5
    assert len(forwards) == 1
    assert backward_calls == [True]
    assert all(p.grad is None for p in loaded.module.parameters())


def test_top_k_is_clamped_to_the_number_of_classes() -> None:
    loaded, x = MODELS["small-resnet"]
    answer = predictions_with_saliency(loaded, x, k=50)
    assert sorted(answer.explanation.targets) == list(range(loaded.entry.num_classes))


def test_multi_class_runs_of_sampling_methods_equal_single_class_runs() -> None:
    """Score-CAM and occlusion read every class from one set of passes; SmoothGrad and integrated
    gradients share each batch's forward and batch the classes' backward passes."""
    loaded, x = MODELS["tinyvgg"]
    for method in ("scorecam", "occlusion", "smoothgrad", "integrated-gradients"):
        batched = get_method(method).explain(loaded, x, loaded.entry.target_layer, TopK(3))
        for i, target in enumerate(batched.targets):
            single = get_method(method).explain(loaded, x, loaded.entry.target_layer, [target])
            scale = float(single.raw.abs().max())
            assert scale > 0, method
            torch.testing.assert_close(batched.raw[i], single.raw[0], rtol=1e-4, atol=1e-5 * scale)
