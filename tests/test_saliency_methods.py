"""Every saliency method against an independent reference: Captum and pytorch-grad-cam (test-only).

Raw maps are compared before ReLU and scaling, where the references expose them: CAMs at the layer's
resolution, gradient methods as C×H×W input attributions.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from captum.attr import GuidedBackprop as CaptumGuidedBackprop
from captum.attr import IntegratedGradients as CaptumIntegratedGradients
from captum.attr import LayerGradCam, NoiseTunnel, Saliency
from captum.attr import Occlusion as CaptumOcclusion
from pytorch_grad_cam import EigenCAM as RefEigenCAM
from pytorch_grad_cam import GradCAM as RefGradCAM
from pytorch_grad_cam import GradCAMPlusPlus as RefGradCAMPlusPlus
from pytorch_grad_cam import LayerCAM as RefLayerCAM
from pytorch_grad_cam import ScoreCAM as RefScoreCAM
from pytorch_grad_cam import XGradCAM as RefXGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from server.services.saliency import get_method
from server.services.saliency.gradients import IntegratedGradients, Occlusion, SmoothGrad
from tests.saliency_support import HAND_GEOMETRY, aligned_upsample, hooks_left, reference_copy, small_models

# The reference libraries warn about their own conveniences (setting requires_grad on the input for us,
# hooking in-place ReLUs); those warnings are theirs, not ours.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Input Tensor .* did not already require gradients", "ignore:Setting forward, backward hooks"
)

MODELS = small_models()
MODEL_NAMES = list(MODELS)
REL = 1e-4


def assert_close_relative(ours: torch.Tensor, ref: torch.Tensor, rel: float = REL) -> None:
    """Equal to ``rel`` of the reference's largest magnitude (and elementwise to ``rel`` relative)."""
    ref = ref.detach() if isinstance(ref, torch.Tensor) else torch.from_numpy(np.asarray(ref))
    ref = ref.to(torch.float32)
    ours = ours.to(torch.float32)
    assert ours.shape == ref.shape
    scale = float(ref.abs().max())
    assert scale > 0, "reference is all zero: the comparison would prove nothing"
    torch.testing.assert_close(ours, ref, rtol=rel, atol=rel * scale)


def _targets(name: str) -> list[int]:
    loaded, x = MODELS[name]
    return [int(i) for i in loaded.module(x)[0].topk(2).indices] + [0]


def _quiet():
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("ignore")  # reference libraries warn about hooks on in-place ReLUs etc.
    return ctx


def _pytorch_grad_cam_raw(cls, name: str, target: int) -> np.ndarray:
    """pytorch-grad-cam's signed map at the layer's resolution (its get_cam_image, before ReLU)."""
    loaded, x = MODELS[name]
    model = reference_copy(loaded)
    layer = dict(model.named_modules())[loaded.entry.target_layer]
    ctx = _quiet()
    try:
        cam = cls(model=model, target_layers=[layer])
        targets = [ClassifierOutputTarget(target)]
        outputs = cam.activations_and_grads(x.clone())
        if cam.uses_gradients:
            model.zero_grad()
            sum(t(o) for t, o in zip(targets, outputs)).backward()
        activations = cam.activations_and_grads.activations[-1].numpy()
        grads = cam.activations_and_grads.gradients[-1].numpy() if cam.uses_gradients else None
        raw = cam.get_cam_image(x.clone(), layer, targets, activations, grads, False)
        cam.activations_and_grads.release()
    finally:
        ctx.__exit__(None, None, None)
    return raw[0]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_gradcam_equals_captum_layer_gradcam(name: str) -> None:
    loaded, x = MODELS[name]
    targets = _targets(name)
    ours = get_method("gradcam").explain(loaded, x, loaded.entry.target_layer, targets)
    model = reference_copy(loaded)
    layer = dict(model.named_modules())[loaded.entry.target_layer]
    for i, target in enumerate(targets):
        ref = LayerGradCam(model, layer).attribute(x.clone(), target=target, relu_attributions=False)
        assert_close_relative(ours.raw[i], ref[0, 0].detach())
    assert hooks_left(loaded.module) == 0


CAM_REFERENCES = {
    "gradcam": RefGradCAM,
    "gradcampp": RefGradCAMPlusPlus,
    "xgradcam": RefXGradCAM,
    "layercam": RefLayerCAM,
    "scorecam": RefScoreCAM,
    "eigencam": RefEigenCAM,
}


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("method", list(CAM_REFERENCES))
def test_cam_family_equals_pytorch_grad_cam(method: str, name: str) -> None:
    loaded, x = MODELS[name]
    targets = _targets(name)
    ours = get_method(method).explain(loaded, x, loaded.entry.target_layer, targets)
    for i, target in enumerate(targets):
        ref = _pytorch_grad_cam_raw(CAM_REFERENCES[method], name, target)
        if method == "eigencam":
            # A singular vector's sign is arbitrary; we orient the map so its strongest value is positive.
            ref = ref if np.abs(ref.min()) <= np.abs(ref.max()) else -ref
        assert_close_relative(ours.raw[i], torch.from_numpy(ref))
    assert hooks_left(loaded.module) == 0


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_vanilla_gradient_equals_captum_saliency(name: str) -> None:
    loaded, x = MODELS[name]
    targets = _targets(name)
    ours = get_method("gradient").explain(loaded, x, None, targets)
    for i, target in enumerate(targets):
        ref = Saliency(reference_copy(loaded)).attribute(x.clone(), target=target, abs=False)
        assert_close_relative(ours.attributions[i], ref[0])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_guided_backprop_equals_captum(name: str) -> None:
    loaded, x = MODELS[name]
    targets = _targets(name)
    ours = get_method("guided-backprop").explain(loaded, x, None, targets)
    plain = get_method("gradient").explain(loaded, x, None, targets)
    assert not torch.allclose(ours.attributions, plain.attributions), "guided backprop must differ from the gradient"
    for i, target in enumerate(targets):
        ctx = _quiet()
        try:
            ref = CaptumGuidedBackprop(reference_copy(loaded)).attribute(x.clone(), target=target)
        finally:
            ctx.__exit__(None, None, None)
        assert_close_relative(ours.attributions[i], ref[0])
    assert hooks_left(loaded.module) == 0


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_guided_gradcam_equals_captum_parts(name: str) -> None:
    """Captum's guided backprop × Captum's ReLU'd LayerGradCam, the latter sampled at each pixel's
    receptive-field centre (ours aligns the coarse map; Captum's GuidedGradCam would stretch it)."""
    loaded, x = MODELS[name]
    targets = _targets(name)[:2]
    ours = get_method("guided-gradcam").explain(loaded, x, loaded.entry.target_layer, targets)
    model = reference_copy(loaded)
    layer = dict(model.named_modules())[loaded.entry.target_layer]
    start, jump = HAND_GEOMETRY[name]
    for i, target in enumerate(targets):
        ctx = _quiet()
        try:
            guided = CaptumGuidedBackprop(reference_copy(loaded)).attribute(x.clone(), target=target)[0]
            cam = LayerGradCam(model, layer).attribute(x.clone(), target=target, relu_attributions=True)[0, 0]
        finally:
            ctx.__exit__(None, None, None)
        coarse = aligned_upsample(cam.detach().numpy(), x.shape[-1], start, jump)
        assert_close_relative(ours.attributions[i], guided * torch.from_numpy(coarse).float())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_smoothgrad_equals_captum_noise_tunnel_with_the_same_noise(name: str) -> None:
    loaded, x = MODELS[name]
    method = SmoothGrad(samples=12, noise_level=0.15, seed=5)
    target = _targets(name)[0]
    ours = method.explain(loaded, x, None, [target])
    torch.manual_seed(5)  # Captum draws its noise from the global generator, in one call of the same shape
    ref = NoiseTunnel(Saliency(reference_copy(loaded))).attribute(
        x.clone(), nt_type="smoothgrad", nt_samples=12, stdevs=method.sigma(x), target=target, abs=False
    )
    assert_close_relative(ours.attributions[0], ref[0])
    # and the noise matters: another seed gives another map
    other = SmoothGrad(samples=12, noise_level=0.15, seed=6).explain(loaded, x, None, [target])
    assert not torch.allclose(other.attributions, ours.attributions)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_integrated_gradients_equal_captum(name: str) -> None:
    loaded, x = MODELS[name]
    targets = _targets(name)[:2]
    ours = IntegratedGradients(steps=32).explain(loaded, x, None, targets)
    for i, target in enumerate(targets):
        ref = CaptumIntegratedGradients(reference_copy(loaded)).attribute(
            x.clone(), baselines=0.0, target=target, n_steps=32, method="gausslegendre"
        )
        assert_close_relative(ours.attributions[i], ref[0].detach())
    # completeness: attributions sum to the score change from the baseline
    logits = loaded.module(torch.cat([x, torch.zeros_like(x)]))
    for i, target in enumerate(targets):
        change = float(logits[0, target] - logits[1, target])
        assert abs(float(ours.attributions[i].sum()) - change) <= 0.02 * max(1.0, abs(change))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_occlusion_equals_captum(name: str) -> None:
    loaded, x = MODELS[name]
    targets = _targets(name)
    method = Occlusion()
    ours = method.explain(loaded, x, None, targets)
    side, stride = method.window(x.shape[-2], x.shape[-1])
    for i, target in enumerate(targets):
        ref = CaptumOcclusion(reference_copy(loaded)).attribute(
            x.clone(), sliding_window_shapes=(3, side, side), strides=(3, stride, stride), baselines=0.0, target=target
        )
        assert_close_relative(ours.attributions[i], ref[0])
