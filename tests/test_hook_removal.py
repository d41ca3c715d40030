"""No hook survives a capture, whether the forward pass ends normally or raises half-way
(in the manner of captum's test_hook_removal)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from server.services.feature_maps.activations import capture_layers
from server.services.runtime.model_runtime import LoadedModel, ModelRuntime
from tests.harness import assert_no_hooks


@pytest.fixture(scope="module")
def runtime() -> ModelRuntime:
    return ModelRuntime(torch.device("cpu"))


def _input(loaded: LoadedModel, height: int | None = None) -> torch.Tensor:
    spec = loaded.entry.input
    return torch.rand(1, spec.channels, height or spec.height, spec.width)


@pytest.mark.parametrize("model_id", ["lenet5", "tinyvgg-shapes", "resnet18"])
def test_no_hook_survives_a_normal_capture(runtime: ModelRuntime, model_id: str) -> None:
    loaded = runtime.load(model_id, "untrained")
    captured = capture_layers(loaded, _input(loaded))
    assert captured.outputs  # the hooks did run
    assert_no_hooks(loaded.module)
    assert not loaded.lock.locked()


def test_no_hook_survives_a_forward_pass_that_fails_half_way(runtime: ModelRuntime) -> None:
    loaded = runtime.load("lenet5", "untrained")
    seen: list[str] = []
    # 20×20 passes the convolutions and fails at the first Linear layer: hooks had already fired
    with pytest.raises(RuntimeError):
        capture_layers(loaded, _input(loaded, height=20), reduce=lambda name, _a: seen.append(name))
    assert "features.0" in seen
    assert_no_hooks(loaded.module)
    assert not loaded.lock.locked()


def test_no_hook_survives_a_hook_that_raises(runtime: ModelRuntime) -> None:
    loaded = runtime.load("resnet18", "untrained")

    def explode(name: str, _array: object) -> None:
        if name == "layer2.0.conv1":
            raise ValueError("boom in the middle of the network")

    with pytest.raises(ValueError, match="boom"):
        capture_layers(loaded, _input(loaded), reduce=explode)
    assert_no_hooks(loaded.module)
    assert not loaded.lock.locked()
    # and the shared module still answers as before
    assert capture_layers(loaded, _input(loaded), keep=["fc"]).outputs["fc"].shape == (1000,)
    assert_no_hooks(loaded.module)


# --- every hook site, through the one hook module -------------------------------------------------------

def _sites(loaded: LoadedModel, x: torch.Tensor | None = None) -> dict[str, object]:
    """Each place that hooks a model, as a call on ``loaded`` (the shared module) or on a private copy."""
    from server.services.runtime.receptive_field import trace_fields
    from server.services.saliency import get_method
    from server.services.step_through import trace as conv_trace

    x = _input(loaded) if x is None else x
    layer = loaded.entry.target_layer
    return {
        "activations": lambda: capture_layers(loaded, x),
        "conv_trace": lambda: conv_trace.capture(loaded, x, loaded.named_layer(layer)),
        "receptive_field": lambda: trace_fields(loaded.module, x),
        "saliency/gradcam": lambda: get_method("gradcam").explain(loaded, x, layer),
        "saliency/guided-backprop": lambda: get_method("guided-backprop").explain(loaded, x),
        "saliency/guided-gradcam": lambda: get_method("guided-gradcam").explain(loaded, x, layer),
    }


@pytest.mark.parametrize("site", ["activations", "conv_trace", "receptive_field", "saliency/gradcam",
                                  "saliency/guided-backprop", "saliency/guided-gradcam"])
@pytest.mark.parametrize("model_id", ["lenet5", "resnet18"])
def test_no_hook_survives_any_hook_site(runtime: ModelRuntime, model_id: str, site: str) -> None:
    loaded = runtime.load(model_id, "untrained")
    _sites(loaded)[site]()
    assert_no_hooks(loaded.module)
    assert not loaded.lock.locked()


@pytest.mark.parametrize("site", ["activations", "receptive_field", "saliency/gradcam", "saliency/guided-backprop"])
def test_no_hook_survives_a_failing_pass_at_any_hook_site(runtime: ModelRuntime, site: str) -> None:
    loaded = runtime.load("lenet5", "untrained")
    bad = _input(loaded, height=20)  # passes the convolutions, fails at the first Linear layer
    with pytest.raises(Exception):  # noqa: B017 - whatever the site raises, its hooks must be gone
        _sites(loaded, bad)[site]()
    assert_no_hooks(loaded.module)
    assert not loaded.lock.locked()


def test_architecture_tables_hook_a_private_copy_and_remove_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    from models.registry import get_entry
    from server.services.runtime.architecture_catalog import describe

    entry = get_entry("tinyvgg-shapes")
    built: list[nn.Module] = []
    original = type(entry).build_untrained

    def keep(self):  # type: ignore[no-untyped-def]
        built.append(original(self))
        return built[-1]

    monkeypatch.setattr(type(entry), "build_untrained", keep)
    assert describe(entry)["layers"]
    assert built
    for model in built:
        assert_no_hooks(model)


def test_only_the_hook_module_registers_hooks() -> None:
    """One hook module: no other file of the server registers a module or tensor hook."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parent.parent / "server"
    pattern = re.compile(r"register_(forward_hook|forward_pre_hook|full_backward_hook|full_backward_pre_hook"
                         r"|backward_hook|hook)\(")
    sites = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if pattern.search(p.read_text()))
    assert sites == ["services/runtime/hooks.py"]
