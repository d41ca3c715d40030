"""Restarting a forward pass after one layer (server/services/experiments/layer_split.py): the tail of a
traced model equals the whole model, also for models whose forward cannot be traced (the hook fallback),
and tracing does not disturb forward passes that other threads run at the same moment."""

from __future__ import annotations

import threading

import torch
from torch import nn

from server.services.experiments.ablation import AblationSpec, ablate, ablation_base
from server.services.experiments.layer_split import LayerSplit, beside_layers
from server.services.runtime.model_runtime import ModelRuntime


class Branchy(nn.Module):
    """Data-dependent control flow in forward: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.conv(x))
        if float(y.mean()) > 0:  # not traceable
            y = y * 2
        return self.head(y)


def test_untraceable_models_use_a_whole_pass_with_an_editing_hook() -> None:
    torch.manual_seed(0)
    runtime = ModelRuntime(torch.device("cpu"))
    loaded = runtime.load("lenet5")
    model = Branchy().eval()
    split = LayerSplit.trace(model, "conv")
    assert split.graph is None and split.reason
    loaded = type(loaded)(loaded.entry, loaded.variant, model, loaded.device, loaded.preprocess_fn)
    x = torch.randn(1, 3, 8, 8)
    spec = AblationSpec("conv", (1, 2), "mean", module=model.conv)
    base = ablation_base(loaded, x, "conv", split)
    assert base.split is None
    outcome = ablate(loaded, x, base, spec)
    handle = model.conv.register_forward_hook(lambda m, i, o: spec.edit(o))
    with torch.no_grad():
        expected = model(x)[0]
    handle.remove()
    assert torch.allclose(outcome.logits, expected, atol=1e-6)
    assert [name for name, _ in outcome.relative_l2] == ["relu", "head.0", "head.1", "head.2"]
    assert beside_layers(model, "conv") == ["relu", "head.0", "head.1", "head.2"]


def test_tracing_leaves_other_threads_forward_passes_alone() -> None:
    runtime = ModelRuntime(torch.device("cpu"))
    other = runtime.load("tinyvgg-shapes").module
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = other(x)
    stop = threading.Event()
    failures: list[str] = []

    def run() -> None:
        while not stop.is_set():
            try:
                with torch.no_grad():
                    got = other(x)
                if not isinstance(got, torch.Tensor) or not torch.equal(got, expected):
                    failures.append(f"wrong answer: {type(got).__name__}")
            except Exception as exc:  # noqa: BLE001
                failures.append(repr(exc))

    thread = threading.Thread(target=run)
    thread.start()
    try:
        resnet = runtime.load("resnet18", "untrained").module
        for layer in ("layer2", "layer3.0.conv1", "layer4", "fc", "conv1", "layer1.1.relu"):
            assert LayerSplit.trace(resnet, layer).graph is not None
    finally:
        stop.set()
        thread.join()
    assert not failures, failures[:3]
