"""Receptive field size, jump and start of every tensor in a forward pass, for any model.

A forward pass of a zero image runs under a TorchFunctionMode that sees every functional op —
convolutions, pools, padding, residual adds, concatenations, flattening — with its real arguments, and
carries per axis (size, jump, start) from inputs to outputs:

    size_out  = size_in + (k_eff − 1)·jump_in,   k_eff = dilation·(kernel − 1) + 1
    jump_out  = jump_in · stride
    start_out = start_in + ((k_eff − 1)/2 − pad_before)·jump_in

``start`` is the input coordinate (pixel index) of the centre of output unit 0's field; unit i's field is
centred at start + i·jump. Ops that merge tensors (add, cat) take the widest field of their inputs;
ops that leave no spatial axes (flatten, linear, global pooling) see the whole image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from server.services.runtime.hooks import recording_hooks


@dataclass(frozen=True)
class Field:
    size: tuple[float, float]
    jump: tuple[float, float]
    start: tuple[float, float]
    whole_image: bool = False
    global_context: bool = False  # a global gate (squeeze-excitation) also reaches this tensor

    def as_json(self) -> dict[str, Any]:
        return {
            "size": [_num(v) for v in self.size],
            "jump": [_num(v) for v in self.jump],
            "start": [_num(v) for v in self.start],
            "whole_image": self.whole_image,
            "global_context": self.global_context,
        }


def _num(v: float) -> float | int:
    return int(v) if float(v).is_integer() else round(float(v), 4)


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[-1]))
    return (int(v), int(v))


def _through(field: Field, kernel: tuple[int, int], stride: tuple[int, int], pad: tuple[int, int],
             dilation: tuple[int, int] = (1, 1)) -> Field:
    size, jump, start = [], [], []
    for a in range(2):
        k_eff = dilation[a] * (kernel[a] - 1) + 1
        size.append(field.size[a] + (k_eff - 1) * field.jump[a])
        start.append(field.start[a] + ((k_eff - 1) / 2 - pad[a]) * field.jump[a])
        jump.append(field.jump[a] * stride[a])
    return Field((size[0], size[1]), (jump[0], jump[1]), (start[0], start[1]), global_context=field.global_context)


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


class _FieldTracker(TorchFunctionMode):
    def __init__(self, image_hw: tuple[int, int]) -> None:
        super().__init__()
        self.image_hw = image_hw
        self.fields: dict[int, Field] = {}
        self._alive: list[torch.Tensor] = []  # keeps ids unique for the pass

    def remember(self, tensor: torch.Tensor, field: Field) -> None:
        self.fields[id(tensor)] = field
        self._alive.append(tensor)

    def field_of(self, tensor: Any) -> Field | None:
        return self.fields.get(id(tensor)) if isinstance(tensor, torch.Tensor) else None

    def whole(self) -> Field:
        h, w = self.image_hw
        return Field((float(h), float(w)), (float(h), float(w)), ((h - 1) / 2, (w - 1) / 2), whole_image=True)

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [t for t in _flat(args) + _flat(list(kwargs.values())) if isinstance(t, torch.Tensor)]
        known = [f for f in (self.field_of(t) for t in inputs) if f is not None]
        if not known:
            return out
        first = self.field_of(args[0]) if args else None
        field = self._propagate(func, args, kwargs, first, known, out)
        for tensor in _flat([out]):
            if isinstance(tensor, torch.Tensor) and field is not None:
                self.remember(tensor, field)
        return out

    def _propagate(self, func: Callable, args: tuple, kwargs: dict, first: Field | None, known: list[Field],
                   out: Any) -> Field | None:
        out_t = out if isinstance(out, torch.Tensor) else next((t for t in _flat([out]) if isinstance(t, torch.Tensor)), None)
        if out_t is None:
            return None
        if out_t.dim() < 3:
            return self.whole()
        gated = any(f.whole_image or f.global_context for f in known)
        local = [f for f in known if not f.whole_image]
        if not local:
            return self.whole()
        known = local
        if first is not None and first.whole_image:
            first = None
        name = getattr(func, "__name__", "")
        if first is not None and name == "conv2d":
            weight = _arg(args, kwargs, 1, "weight", None)
            stride = _pair(_arg(args, kwargs, 3, "stride", 1))
            padding = _arg(args, kwargs, 4, "padding", 0)
            dilation = _pair(_arg(args, kwargs, 5, "dilation", 1))
            kernel = (int(weight.shape[-2]), int(weight.shape[-1]))
            if isinstance(padding, str):
                pad = (0, 0) if padding == "valid" else tuple(  # 'same': PyTorch pads (total // 2) before
                    (dilation[a] * (kernel[a] - 1)) // 2 for a in range(2))
            else:
                pad = _pair(padding)
            return _through(first, kernel, stride, pad, dilation)  # type: ignore[arg-type]
        if first is not None and name in ("max_pool2d", "avg_pool2d", "lp_pool2d"):
            kernel = _pair(_arg(args, kwargs, 1, "kernel_size", 1))
            if name == "lp_pool2d":  # (input, norm_type, kernel_size, stride)
                kernel = _pair(_arg(args, kwargs, 2, "kernel_size", 1))
                stride_raw = _arg(args, kwargs, 3, "stride", None)
                pad, dilation = (0, 0), (1, 1)
            else:
                stride_raw = _arg(args, kwargs, 2, "stride", None)
                pad = _pair(_arg(args, kwargs, 3, "padding", 0))
                dilation = _pair(_arg(args, kwargs, 4, "dilation", 1)) if "max" in name else (1, 1)
            stride = _pair(stride_raw) if stride_raw not in (None, [], ()) else kernel
            return _through(first, kernel, stride, pad, dilation)
        if first is not None and name in ("adaptive_avg_pool2d", "adaptive_max_pool2d"):
            in_hw = tuple(int(s) for s in args[0].shape[-2:])
            out_hw = tuple(int(s) for s in out_t.shape[-2:])
            if out_hw == (1, 1):
                return self.whole()
            kernel = tuple(math.ceil(in_hw[a] / out_hw[a]) for a in range(2))
            stride = tuple(max(1, in_hw[a] // out_hw[a]) for a in range(2))
            return _through(first, kernel, stride, (0, 0))  # type: ignore[arg-type]
        if first is not None and name in ("pad", "_pad"):
            pads = list(_arg(args, kwargs, 1, "pad", ()))
            left, top = (pads[0] if len(pads) > 0 else 0), (pads[2] if len(pads) > 2 else 0)
            return Field(first.size, first.jump, (first.start[0] - top * first.jump[0], first.start[1] - left * first.jump[1]),
                         global_context=first.global_context)
        # Element-wise ops, adds, concatenations, normalisation: the union of the inputs' fields.
        widest = max(known, key=lambda f: (f.size[0] * f.size[1], f.jump[0]))
        return Field(widest.size, widest.jump, widest.start, global_context=gated) if gated else widest


def _flat(items: Any) -> list[Any]:
    flat: list[Any] = []
    for item in items:
        if isinstance(item, (list, tuple)):
            flat.extend(_flat(item))
        else:
            flat.append(item)
    return flat


def trace_fields(model: torch.nn.Module, example: torch.Tensor) -> dict[str, Field]:
    """Receptive field of each module's output (by ``named_modules`` name) for a 1×C×H×W example."""
    h, w = int(example.shape[-2]), int(example.shape[-1])
    tracker = _FieldTracker((h, w))
    by_module: dict[str, Field] = {}

    def make_hook(name: str) -> Callable:
        def hook(_module: torch.nn.Module, _inp: Any, output: Any) -> None:
            tensor = output if isinstance(output, torch.Tensor) else next(
                (t for t in _flat([output]) if isinstance(t, torch.Tensor)), None)
            field = tracker.field_of(tensor)
            if field is not None:
                by_module[name] = field
        return hook

    hooks = [(module, make_hook(name)) for name, module in model.named_modules() if name]
    x = example.clone()
    with recording_hooks(model, hooks), torch.no_grad(), tracker:
        tracker.remember(x, Field((1.0, 1.0), (1.0, 1.0), (0.0, 0.0)))
        model(x)
    return by_module
