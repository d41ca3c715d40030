"""The architecture table: parameter counts and shapes as PyTorch has them; receptive fields measured."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from models.registry import TORCHVISION_MODELS, get_entry, list_models
from server.services.runtime.architecture_catalog import describe
from server.services.runtime.receptive_field import trace_fields


@pytest.mark.parametrize("model_id", [spec[0] for spec in TORCHVISION_MODELS])
def test_torchvision_params_match_an_independent_build(model_id: str) -> None:
    table = describe(get_entry(model_id))
    kwargs = {"aux_logits": False, "init_weights": True} if model_id == "googlenet" else {}
    reference = torchvision.models.get_model(model_id, weights=None, **kwargs)
    modules = dict(reference.named_modules())
    assert table["total_params"] == sum(p.numel() for p in reference.parameters())
    names = [layer["name"] for layer in table["layers"]]
    assert names == [n for n, _ in reference.named_modules() if n]
    for layer in table["layers"]:
        assert layer["params"] == sum(p.numel() for p in modules[layer["name"]].parameters()), layer["name"]
    meta_params = torchvision.models.get_model_weights(model_id).DEFAULT.meta.get("num_params")
    if meta_params is not None:
        assert table["total_params"] == meta_params


@pytest.mark.parametrize("entry", [e for e in list_models() if e.family == "bundled"], ids=lambda e: e.id)
def test_bundled_output_shapes_match_a_forward_pass(entry) -> None:  # type: ignore[no-untyped-def]
    table = {layer["name"]: layer for layer in describe(entry)["layers"]}
    model = entry.build_untrained()
    x = torch.randn(1, entry.input.channels, entry.input.height, entry.input.width)
    seen = {}
    handles = [m.register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, list(o.shape[1:])))
               for n, m in model.named_modules() if n]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    for name, shape in seen.items():
        assert table[name]["output_shape"] == shape, name


def test_conv_hyper_parameters_are_reported() -> None:
    layers = {layer["name"]: layer for layer in describe(get_entry("resnet18"))["layers"]}
    conv1 = layers["conv1"]
    assert conv1["kind"] == "conv"
    assert (conv1["kernel_size"], conv1["stride"], conv1["padding"], conv1["dilation"], conv1["groups"]) == (
        [7, 7], [2, 2], [3, 3], [1, 1], 1)
    assert layers["maxpool"]["op"] == "max" and layers["maxpool"]["kernel_size"] == [3, 3]
    assert layers["conv1"]["output_shape"] == [64, 112, 112]
    assert layers["layer4"]["output_shape"] == [512, 7, 7] and layers["layer4"]["kind"] == "block"
    assert layers["fc"]["output_shape"] == [1000]


@pytest.mark.parametrize(
    ("model_id", "layer", "size", "jump"),
    [
        # Published theoretical receptive fields (e.g. Araujo et al., "Computing receptive fields of CNNs", 2019).
        ("resnet18", "layer4", 435, 32),
        ("resnet50", "layer4", 427, 32),
        ("vgg16", "features.30", 212, 32),
        ("alexnet", "features.12", 195, 32),
        ("lenet5", "features.3", 14, 2),  # C1 5 → S2 6 → C3 14
        ("lenet5", "features.5", 16, 4),
    ],
)
def test_receptive_fields_match_published_values(model_id: str, layer: str, size: int, jump: int) -> None:
    layers = {entry["name"]: entry for entry in describe(get_entry(model_id))["layers"]}
    field = layers[layer]["receptive_field"]
    assert field["size"] == [size, size] and field["jump"] == [jump, jump]


class _Branchy(nn.Module):
    """Stride, padding, dilation, a residual add, a concatenation and asymmetric padding in one net."""

    def __init__(self) -> None:
        super().__init__()
        self.pad = nn.ZeroPad2d((1, 2, 1, 2))
        self.conv1 = nn.Conv2d(1, 2, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(2, 2, 3, padding=2, dilation=2)
        self.pool = nn.AvgPool2d(2, stride=2)
        self.side_pool = nn.AvgPool2d(2, stride=2)
        self.side = nn.Conv2d(2, 2, 1)
        self.conv3 = nn.Conv2d(4, 3, 5, stride=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv1(self.pad(x))
        b = self.conv2(a) + a
        c = torch.cat([self.pool(b), self.side(self.side_pool(a))], dim=1)
        return self.conv3(c)


def _measured_field(model: nn.Module, layer: str, size: int, unit: tuple[int, int]) -> tuple[int, int, float, float]:
    """Height/width and centre of the input region whose gradient reaches one unit (all-positive weights)."""
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.1)
    out = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: out.setdefault("y", o))
    x = torch.ones(1, 1, size, size, requires_grad=True)
    try:
        model(x)
    finally:
        handle.remove()
    out["y"][0, 0, unit[0], unit[1]].backward()
    rows, cols = torch.nonzero(x.grad[0, 0] != 0, as_tuple=True)
    return (int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1),
            float(rows.min() + rows.max()) / 2, float(cols.min() + cols.max()) / 2)


@pytest.mark.parametrize("layer", ["conv1", "conv2", "pool", "side_pool", "side", "conv3"])
def test_traced_fields_equal_gradient_measurement(layer: str) -> None:
    model = _Branchy()
    size = 64
    fields = trace_fields(model, torch.zeros(1, 1, size, size))
    field = fields[layer]
    unit = (5, 4)  # well inside, so the field is not clipped by the border
    h, w, cy, cx = _measured_field(model, layer, size, unit)
    assert (h, w) == (field.size[0], field.size[1])
    assert (cy, cx) == (field.start[0] + unit[0] * field.jump[0], field.start[1] + unit[1] * field.jump[1])
