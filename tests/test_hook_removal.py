"""No hook survives a capture, whether the forward pass ends normally or raises half-way
(in the manner of captum's test_hook_removal)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.modules import module as module_globals

from server.services.activations import capture_layers
from server.services.model_runtime import LoadedModel, ModelRuntime


@pytest.fixture(scope="module")
def runtime() -> ModelRuntime:
    return ModelRuntime(torch.device("cpu"))


def _assert_no_hooks(model: nn.Module) -> None:
    for name, sub in model.named_modules():
        assert not sub._forward_hooks, f"forward hook left on {name or 'the model'}"
        assert not sub._forward_pre_hooks, f"forward pre-hook left on {name or 'the model'}"
        assert not sub._backward_hooks, f"backward hook left on {name or 'the model'}"
        assert not getattr(sub, "_backward_pre_hooks", {}), f"backward pre-hook left on {name or 'the model'}"
    assert not module_globals._global_forward_hooks
    assert not module_globals._global_forward_pre_hooks


def _input(loaded: LoadedModel, height: int | None = None) -> torch.Tensor:
    spec = loaded.entry.input
    return torch.rand(1, spec.channels, height or spec.height, spec.width)


@pytest.mark.parametrize("model_id", ["lenet5", "tinyvgg-shapes", "resnet18"])
def test_no_hook_survives_a_normal_capture(runtime: ModelRuntime, model_id: str) -> None:
    loaded = runtime.load(model_id, "untrained")
    captured = capture_layers(loaded, _input(loaded))
    assert captured.outputs  # the hooks did run
    _assert_no_hooks(loaded.module)
    assert not loaded.lock.locked()


def test_no_hook_survives_a_forward_pass_that_fails_half_way(runtime: ModelRuntime) -> None:
    loaded = runtime.load("lenet5", "untrained")
    seen: list[str] = []
    # 20×20 passes the convolutions and fails at the first Linear layer: hooks had already fired
    with pytest.raises(RuntimeError):
        capture_layers(loaded, _input(loaded, height=20), reduce=lambda name, _a: seen.append(name))
    assert "features.0" in seen
    _assert_no_hooks(loaded.module)
    assert not loaded.lock.locked()


def test_no_hook_survives_a_hook_that_raises(runtime: ModelRuntime) -> None:
    loaded = runtime.load("resnet18", "untrained")

    def explode(name: str, _array: object) -> None:
        if name == "layer2.0.conv1":
            raise ValueError("boom in the middle of the network")

    with pytest.raises(ValueError, match="boom"):
        capture_layers(loaded, _input(loaded), reduce=explode)
    _assert_no_hooks(loaded.module)
    assert not loaded.lock.locked()
    # and the shared module still answers as before
    assert capture_layers(loaded, _input(loaded), keep=["fc"]).outputs["fc"].shape == (1000,)
    _assert_no_hooks(loaded.module)
