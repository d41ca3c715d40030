"""A model's architecture as a table: every named module with its output shape, parameters,
hyper-parameters and receptive field, for the model's own input size."""

from __future__ import annotations

import threading
from typing import Any

import torch
from torch import nn

from models.layer_semantics import conv_padding
from models.registry import ModelEntry
from server.services.receptive_field import trace_fields

_KINDS: tuple[tuple[tuple[type, ...], str], ...] = (
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d), "conv"),
    ((nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.LPPool2d), "pool"),
    (
        (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.GELU,
         nn.Softplus, nn.ELU, nn.PReLU, nn.Softmax),
        "activation",
    ),
    ((nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm), "norm"),
    ((nn.Linear,), "linear"),
    ((nn.Dropout, nn.Dropout2d), "dropout"),
    ((nn.Flatten,), "reshape"),
    ((nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d), "padding"),
)


def layer_kind(module: nn.Module) -> str:
    for types, kind in _KINDS:
        if isinstance(module, types):
            return kind
    return "block" if any(True for _ in module.children()) else "other"


def _pair(v: Any) -> list[int]:
    if isinstance(v, (tuple, list)):
        return [int(x) for x in v] if len(v) == 2 else [int(v[0])] * 2
    return [int(v), int(v)]


def hyper_parameters(module: nn.Module) -> dict[str, Any]:
    """The numbers that decide how a conv or pool layer slides over its input."""
    if isinstance(module, nn.Conv2d):
        raw = conv_padding(module)  # 'same' for timm's dynamic-same convs, which hold padding 0
        padding = raw if isinstance(raw, str) else _pair(raw)
        return {
            "in_channels": module.in_channels,
            "out_channels": module.out_channels,
            "kernel_size": _pair(module.kernel_size),
            "stride": _pair(module.stride),
            "padding": padding,
            "dilation": _pair(module.dilation),
            "groups": module.groups,
            "bias": module.bias is not None,
        }
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        info: dict[str, Any] = {
            "op": "max" if isinstance(module, nn.MaxPool2d) else "avg",
            "kernel_size": _pair(module.kernel_size),
            "stride": _pair(module.stride if module.stride is not None else module.kernel_size),
            "padding": _pair(module.padding),
            "ceil_mode": bool(module.ceil_mode),
        }
        if isinstance(module, nn.MaxPool2d):
            info["dilation"] = _pair(module.dilation)
        return info
    if isinstance(module, nn.LPPool2d):
        return {"op": "l2" if module.norm_type == 2 else f"l{module.norm_type}", "kernel_size": _pair(module.kernel_size),
                "stride": _pair(module.stride if module.stride is not None else module.kernel_size), "padding": [0, 0]}
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return {"op": "adaptive_avg" if isinstance(module, nn.AdaptiveAvgPool2d) else "adaptive_max",
                "output_size": _pair(module.output_size)}
    if isinstance(module, nn.Linear):
        return {"in_features": module.in_features, "out_features": module.out_features}
    if isinstance(module, nn.ZeroPad2d):
        left, right, top, bottom = (int(p) for p in module.padding)
        return {"padding_lrtb": [left, right, top, bottom]}
    if isinstance(module, nn.LeakyReLU):
        return {"negative_slope": module.negative_slope}
    return {}


def _shape(output: Any) -> list[int] | None:
    if isinstance(output, torch.Tensor):
        return [int(s) for s in output.shape[1:]]
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return [int(s) for s in output[0].shape[1:]]
    return None


def describe(entry: ModelEntry) -> dict[str, Any]:
    """Layers in ``named_modules`` order and the total parameter count, on a private untrained copy."""
    model = entry.build_untrained()  # architecture only; never the shared, served module
    example = torch.zeros(1, entry.input.channels, entry.input.height, entry.input.width)
    shapes: dict[str, list[int] | None] = {}
    handles = []
    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(
                    lambda _m, _i, out, name=name: shapes.__setitem__(name, _shape(out))))
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    fields = trace_fields(model, example)
    layers = []
    for name, module in model.named_modules():
        if not name:
            continue
        leaf = not any(True for _ in module.children())
        layer: dict[str, Any] = {
            "name": name,
            "type": type(module).__name__,
            "kind": layer_kind(module),
            "depth": name.count(".") + 1,
            "leaf": leaf,
            "output_shape": shapes.get(name),
            "params": sum(p.numel() for p in module.parameters()),
            "receptive_field": fields[name].as_json() if name in fields else None,
        }
        layer.update(hyper_parameters(module))
        layers.append(layer)
    return {"layers": layers, "total_params": sum(p.numel() for p in model.parameters())}


class ArchitectureCatalog:
    """Descriptions are computed once per model (they do not depend on weights) and kept."""

    def __init__(self) -> None:
        self._cache: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def get(self, entry: ModelEntry) -> dict[str, Any]:
        with self._lock:
            hit = self._cache.get(entry.id)
        if hit is None:
            hit = describe(entry)
            with self._lock:
                self._cache[entry.id] = hit
        return hit
