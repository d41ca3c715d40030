"""Cascading model randomisation: the steps, re-initialisation against doing it by hand, the served model
untouched, and LeNet-5's maps changing once its last layer is randomised."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from models.datasets.mnist import load_mnist_test
from server.services.runtime.model_runtime import ModelRuntime
from server.services.saliency.base import SaliencyMethod
from server.services.saliency.methods import get_method
from server.services.trust.cascade import cascade_units, private_copy, randomise_step, step_seed
from server.services.trust.sanity import run_cascade
from server.services.work.cancel import WorkCancelled


@pytest.fixture(scope="module")
def runtime() -> ModelRuntime:
    return ModelRuntime(torch.device("cpu"))


@pytest.fixture(scope="module")
def mnist_batch(runtime: ModelRuntime, shared_data) -> torch.Tensor:
    images, _ = load_mnist_test(shared_data / "mnist")
    loaded = runtime.load("lenet5")
    return loaded.preprocess(Image.fromarray(images[0]))[None]


def test_units_are_layers_for_small_models_and_blocks_for_deep_ones(runtime: ModelRuntime) -> None:
    lenet = cascade_units(runtime.load("lenet5").module, 12)
    assert [u.names for u in lenet] == [("features.0",), ("features.3",), ("classifier.1",), ("classifier.3",),
                                        ("classifier.5",)]
    effnet = cascade_units(runtime.load("efficientnet_lite0").module, 12)
    assert 2 < len(effnet) <= 12
    assert effnet[0].names == ("conv_stem", "bn1")  # a batch norm goes with the conv before it
    assert effnet[-1].names == ("classifier",)
    assert all(name.startswith("blocks.") for unit in effnet[1:-2] for name in unit.names)
    # every parameter of the model is in exactly one unit
    model = runtime.load("efficientnet_lite0").module
    modules = dict(model.named_modules())
    covered = [id(p) for unit in effnet for name in unit.names for p in modules[name].parameters()]
    assert sorted(covered) == sorted(id(p) for p in model.parameters())


def test_deep_plain_stack_is_chunked_within_the_step_budget() -> None:
    model = nn.Sequential(nn.Sequential(*[nn.Conv2d(3, 3, 3) for _ in range(13)]), nn.Linear(3, 2))
    units = cascade_units(model, 6)
    assert len(units) <= 6
    assert [n for u in units for n in u.names] == [f"0.{i}" for i in range(13)] + ["1"]


@pytest.mark.parametrize("model_id", ["lenet5", "tinyvgg-shapes"])
def test_randomisation_equals_reinitialising_by_hand(runtime: ModelRuntime, model_id: str) -> None:
    loaded = runtime.load(model_id)
    twin = private_copy(loaded.module)
    units = list(reversed(cascade_units(twin, 12)))
    by_hand = copy.deepcopy(loaded.module)
    hand_modules = dict(by_hand.named_modules())
    for step, unit in enumerate(units, start=1):
        before = {k: v.clone() for k, v in twin.state_dict().items()}
        randomise_step(twin, unit, seed=3, step=step)
        torch.manual_seed(step_seed(3, step))  # by hand: the layers' own default initialisation
        for name in unit.names:
            hand_modules[name].reset_parameters()
        for name, value in by_hand.state_dict().items():
            assert torch.equal(twin.state_dict()[name], value), (step, name)
        changed = {k for k, v in twin.state_dict().items() if not torch.equal(v, before[k])}
        assert changed == {f"{n}.{p}" for n in unit.names for p in ("weight", "bias")}


def test_same_seed_same_weights_other_seed_other_weights(runtime: ModelRuntime) -> None:
    loaded = runtime.load("lenet5")
    unit = cascade_units(loaded.module, 12)[-1]
    a, b, c = (private_copy(loaded.module) for _ in range(3))
    randomise_step(a, unit, 0, 1)
    randomise_step(b, unit, 0, 1)
    randomise_step(c, unit, 1, 1)
    assert torch.equal(a.classifier[5].weight, b.classifier[5].weight)
    assert not torch.equal(a.classifier[5].weight, c.classifier[5].weight)


def _methods(*names: str) -> tuple[SaliencyMethod, ...]:
    return tuple(get_method(name) for name in names)


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def test_served_model_is_never_touched(runtime: ModelRuntime, mnist_batch: torch.Tensor) -> None:
    loaded = runtime.load("lenet5")
    before = {k: v.clone() for k, v in loaded.module.state_dict().items()}
    result = run_cascade(loaded, mnist_batch, _methods("gradcam", "gradient"), None, 0, 12)
    assert len(result.scores) == 5
    for name, value in loaded.module.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert _hook_count(loaded.module) == 0
    assert not any(p.requires_grad for p in loaded.module.parameters())


def test_lenet_maps_change_once_the_last_layer_is_randomised(runtime: ModelRuntime, mnist_batch: torch.Tensor) -> None:
    """Both a gradient method and Grad-CAM must react to randomising only the output layer."""
    result = run_cascade(runtime.load("lenet5"), mnist_batch, _methods("gradcam", "gradient"), None, 0, 12)
    assert result.label == "7"  # MNIST test image 0 is a 7, which the trained LeNet gets right
    for method in ("gradcam", "gradient"):
        original, after_last = result.maps[method][0], result.maps[method][1]
        assert float(np.abs(original - after_last).mean()) > 0.05, method
        assert result.scores[0][method]["spearman"] < 0.9, method


def test_cancelled_run_stops(runtime: ModelRuntime, mnist_batch: torch.Tensor) -> None:
    with pytest.raises(WorkCancelled):
        run_cascade(runtime.load("lenet5"), mnist_batch, _methods("gradcam"), None, 0, 12, cancelled=lambda: True)
