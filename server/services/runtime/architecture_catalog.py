"""A model's architecture as a table: every named module with its output shape, parameters,
hyper-parameters and receptive field, for the model's own input size."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models.layer_semantics import conv_padding
from models.registry import ModelEntry
from server.services.runtime.cache import ResultCache
from server.services.runtime.hooks import recording_hooks
from server.services.runtime.receptive_field import Field, trace_fields

log = logging.getLogger("convscope")

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


@dataclass(frozen=True)
class LayerGeometry:
    """Unit (i, j) of the layer is centred on input pixel (start[0] + i·jump[0], start[1] + j·jump[1])."""

    start: tuple[float, float]
    jump: tuple[float, float]


@dataclass(frozen=True)
class Architecture:
    """A model's table (as the API serves it) and the receptive fields it was made from."""

    table: dict[str, Any]
    geometry: dict[str, LayerGeometry]  # layers whose field is smaller than the whole image

    @property
    def nbytes(self) -> int:
        return 512 * (len(self.table["layers"]) + len(self.geometry))


def describe(entry: ModelEntry) -> dict[str, Any]:
    """The architecture table of ``entry`` (see :func:`describe_architecture`)."""
    return describe_architecture(entry).table


def describe_architecture(entry: ModelEntry) -> Architecture:
    """Layers in ``named_modules`` order and the total parameter count, on a private untrained copy.

    The receptive fields are traced here, once per model, for the table and the saliency geometry alike.
    """
    model = entry.build_untrained()  # architecture only; never the shared, served module
    example = torch.zeros(1, entry.input.channels, entry.input.height, entry.input.width)
    shapes: dict[str, list[int] | None] = {}
    named = [(name, module) for name, module in model.named_modules() if name]
    hooks = [(module, lambda _m, _i, out, name=name: shapes.__setitem__(name, _shape(out))) for name, module in named]
    with recording_hooks(model, hooks), torch.no_grad():
        model(example)
    fields: dict[str, Field]
    try:
        fields = trace_fields(model, example)
    except Exception:  # an architecture the tracer cannot follow: no fields, stretched saliency maps; say so
        log.warning("receptive fields of %s could not be traced; saliency maps will be stretched", entry.id,
                    exc_info=True)
        fields = {}
    layers = []
    onnx_nodes = entry.meta.get("layer_labels", {})  # ONNX/Keras models: module name → the ONNX node's name
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
        if name in onnx_nodes:
            layer["onnx_node"] = onnx_nodes[name]
        layer.update(hyper_parameters(module))
        layers.append(layer)
    geometry = {
        name: LayerGeometry(tuple(field.start), tuple(field.jump))  # type: ignore[arg-type]
        for name, field in fields.items()
        if not field.whole_image
    }
    table = {"layers": layers, "total_params": sum(p.numel() for p in model.parameters())}
    return Architecture(table, geometry)


class ArchitectureCatalog:
    """Descriptions are computed once per model (they do not depend on weights) and kept."""

    def __init__(self, budget_bytes: int = 16 * 1024 * 1024) -> None:
        self.cache: ResultCache[Architecture] = ResultCache("architectures", budget_bytes)

    def architecture(self, entry: ModelEntry) -> Architecture:
        return self.cache.get_or_compute(entry.id, lambda: describe_architecture(entry))

    def get(self, entry: ModelEntry) -> dict[str, Any]:
        """The architecture table the API serves."""
        return self.architecture(entry).table

    def geometry(self, entry: ModelEntry, layer: str | None) -> LayerGeometry | None:
        """Where the layer's units sit on the input; None when its field is the whole image (or unknown)."""
        if layer is None:
            return None
        return self.architecture(entry).geometry.get(layer)
