"""Traces of one output cell of a real model's layer on a real image: every number that makes it.

* convolution: the window of each input channel the kernel touches (padding cells named), the kernel
  slice, the products, each channel's sum, the bias, the total — then the element-wise modules that
  follow it in the forward pass (batch norm, the activation), read from the pass itself;
* pooling (max / average / Lp / adaptive): the window, the op and the result;
* activations: input, formula, output;
* softmax over the model's logits: exponentials, their sum, the probabilities.

A capture runs the model once with hooks (registered under ``LoadedModel.lock``, removed in ``finally``,
recording only the calling thread's pass, stopping the pass once everything needed is seen) and keeps
the layer's input and output in a small byte-budgeted LRU, so stepping from cell to cell costs no
forward pass. Sums are float64 over PyTorch's float32 values; tests check them against the layer output.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.layer_semantics import conv_padding, fused_activation
from server.errors import ApiError
from server.services.runtime.architecture_catalog import layer_kind
from server.services.runtime.cache import ResultCache
from server.services.runtime.hooks import LayerRecorder, StopForward, forward_hooks, run_forward
from server.services.runtime.model_runtime import LoadedModel, ModelLayer
from server.services.step_through import window_math as wm
from server.services.work.scheduler import Admit

MAX_TOP = 64
_ELEMENTWISE = (nn.BatchNorm2d,)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_ZERO_PADS = (nn.ZeroPad2d, nn.ConstantPad2d)

ACTIVATION_FORMULAS = {
    "ReLU": "max(0, x)", "ReLU6": "min(max(0, x), 6)", "LeakyReLU": "x if x > 0 else {slope}·x",
    "Tanh": "tanh(x)", "Sigmoid": "1 / (1 + e⁻ˣ)", "Softplus": "ln(1 + eˣ)", "SiLU": "x · sigmoid(x)",
    "Hardswish": "x · min(max(x + 3, 0), 6) / 6", "Hardsigmoid": "min(max(x + 3, 0), 6) / 6",
    "GELU": "x · Φ(x)", "ELU": "x if x > 0 else eˣ − 1", "PReLU": "x if x > 0 else a·x",
}


@dataclass
class LayerCapture:
    """The tensors entering and leaving a layer for one image, and what the forward pass did next."""

    input: torch.Tensor  # C×H×W (or F) on the CPU, float32
    output: torch.Tensor
    after: list[tuple[str, nn.Module, torch.Tensor]] = field(default_factory=list)  # verified chain
    padded_by: tuple[str, tuple[int, int, int, int]] | None = None  # (pad module, (left, right, top, bottom))

    @property
    def nbytes(self) -> int:
        tensors = [self.input, self.output] + [t for _n, _m, t in self.after]
        return sum(t.numel() * t.element_size() for t in tensors)


def _leaves(module: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in module.named_modules() if n and not any(True for _ in m.children())]


def _follow_candidates(leaves: list[tuple[str, nn.Module]], index: int) -> list[tuple[str, nn.Module]]:
    """Element-wise modules right after a conv in module order (batch norm, then an activation)."""
    found: list[tuple[str, nn.Module]] = []
    for name, module in leaves[index + 1:index + 3]:
        if isinstance(module, _ELEMENTWISE) and not found:
            found.append((name, module))
            continue
        if layer_kind(module) == "activation" and not isinstance(module, nn.Softmax):
            found.append((name, module))
        break
    return found


def _fused_follow(module: nn.Module, layer_name: str) -> list[tuple[str, nn.Module]] | None:
    """A batch norm that applies its activation itself (timm's BatchNormAct2d) right after the conv:
    [(norm), (its activation)], or [(norm)] when that activation is the identity; None otherwise."""
    named = list(module.named_modules())
    index = next((i for i, (n, _m) in enumerate(named) if n == layer_name), None)
    if index is None or index + 1 >= len(named):
        return None
    name, norm = named[index + 1]
    if not isinstance(norm, nn.BatchNorm2d) or not any(True for _ in norm.children()):
        return None
    act = fused_activation(norm)
    return [(name, norm)] + ([(f"{name}.act", act)] if act is not None else [])


def capture(loaded: LoadedModel, batch: torch.Tensor, layer: ModelLayer) -> LayerCapture:
    """Run the model on ``batch`` (1×C×H×W) and record what enters and leaves ``layer``."""
    layer_name, target = layer.name, layer.module
    leaves = _leaves(loaded.module)
    index = next((i for i, (n, _m) in enumerate(leaves) if n == layer_name), None)
    follow = _follow_candidates(leaves, index) if index is not None and isinstance(target, nn.Conv2d) else []
    fused = _fused_follow(loaded.module, layer_name) if isinstance(target, nn.Conv2d) else None
    if fused:
        follow = fused
    before = leaves[index - 1] if index else None
    pad_module = before if before is not None and isinstance(before[1], _ZERO_PADS) else None
    # the layer's first call with a single tensor in (DenseNet's dense layers take a list: not traceable,
    # 422 below, never a crash); with nothing to follow, the pass stops right there
    recorder = LayerRecorder()
    seen = recorder.outputs
    chain: list[tuple[str, nn.Module, torch.Tensor]] = []
    pending: dict[str, bool] = {}
    on_target = recorder.hook("output", keep="copy", with_input=True, first_only=True, stop=not follow)
    on_pad = recorder.hook("pad", keep="copy", first_only=True)

    def pre_follow(name: str, stage: int) -> Any:
        def hook(_m: nn.Module, inputs: tuple) -> None:
            if len(chain) != stage or "output" not in seen:
                return
            previous = seen["output"] if stage == 0 else chain[-1][2]
            x = inputs[0].detach()[0].float().cpu()
            pending[name] = x.shape == previous.shape and torch.equal(x, previous)
        return hook

    def post_follow(name: str, module: nn.Module, stage: int) -> Any:
        def hook(_m: nn.Module, _inputs: tuple, output: Any) -> None:
            if not pending.pop(name, False):
                return
            chain.append((name, module, output.detach()[0].float().cpu().clone()))
            if len(chain) == len(follow):
                raise StopForward
        return hook

    hooks = [(target, on_target)]
    pre_hooks = []
    if pad_module is not None:
        hooks.append((pad_module[1], on_pad))
    for stage, (name, module) in enumerate(follow):
        pre_hooks.append((module, pre_follow(name, stage)))
        act = fused_activation(module) if fused and stage == 0 else None
        if act is not None:  # the norm's own output is what enters its activation
            pre_hooks.append((act, lambda m, inputs, hook=post_follow(name, module, stage): hook(m, inputs, inputs[0])))
        else:
            hooks.append((module, post_follow(name, module, stage)))
    with forward_hooks(loaded, hooks, pre_hooks), torch.no_grad():
        run_forward(loaded.module, batch)
    if "output" not in recorder.inputs:
        raise ApiError(422, "layer_not_traceable", f"Layer {layer_name!r} did not run on a single tensor in the forward pass.")
    result = LayerCapture(recorder.inputs["output"], seen["output"], chain)
    if pad_module is not None and "pad" in seen and torch.equal(seen["pad"], result.input):
        left, right, top, bottom = (int(p) for p in pad_module[1].padding)
        result.padded_by = (pad_module[0], (left, right, top, bottom))
    return result


class StepThrough:
    """Captures by (model, weights variant, image, layer) in a :class:`ResultCache`, computed under
    admission control; stepping from cell to cell then costs no forward pass."""

    def __init__(self, inputs: Any, admit: Admit | None = None,
                 outputs: Any = None, budget_bytes: int = 128 * 1024 * 1024) -> None:
        self.inputs = inputs  # ModelInputs
        self.admit = admit
        self.outputs = outputs  # ModelOutputs: the softmax trace reads the image's shared forward result
        self.cache: ResultCache[LayerCapture] = ResultCache("traces", budget_bytes)

    def softmax(self, loaded: LoadedModel, image_id: str, top: int) -> dict[str, Any]:
        """Softmax at the output: logits, exponentials, their sum and the probabilities."""
        return softmax_trace(self.outputs.logits(loaded, image_id), loaded.entry.categories, top)

    def capture(self, loaded: LoadedModel, image_id: str, layer: ModelLayer) -> LayerCapture:
        """What enters and leaves ``layer`` (resolved by the caller: ``server.deps.LayerDep``) for the image."""

        def compute() -> LayerCapture:
            batch = self.inputs.batch(loaded, image_id)
            label = f"trace/{loaded.entry.id}"
            with self.admit(label, "cheap") if self.admit is not None else nullcontext():
                return capture(loaded, batch, layer)

        return self.cache.get_or_compute((loaded.entry.id, loaded.variant, image_id, layer.name), compute)


def _index(tensor: torch.Tensor, channel: int, y: int, x: int) -> float:
    if tensor.dim() == 1:
        return float(tensor[channel])
    return float(tensor[channel, y, x])


def check_position(shape: tuple[int, ...], channel: int, y: int, x: int, what: str = "output") -> None:
    """404 for a channel or position outside the layer's output (a sentence says the valid ranges)."""
    if not 0 <= channel < shape[0]:
        raise ApiError(404, "unknown_channel", f"channel must be between 0 and {shape[0] - 1} for this layer's {what}.")
    if len(shape) == 3 and not (0 <= y < shape[1] and 0 <= x < shape[2]):
        raise ApiError(404, "unknown_position",
                       f"(y, x) must be within 0..{shape[1] - 1} × 0..{shape[2] - 1} for this layer's {what}.")


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[-1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _conv_window(module: nn.Conv2d, in_hw: tuple[int, int]) -> wm.Window2d:
    k, s, d = _pair(module.kernel_size), _pair(module.stride), _pair(module.dilation)
    padding = conv_padding(module)  # timm's dynamic-same convs pad in forward, as TensorFlow's 'same'
    if isinstance(padding, str):
        pads: Any = padding  # 'valid' | 'same' (PyTorch: stride 1, extra cell after, as ours)
        pads = (pads, pads)
    else:
        pads = _pair(module.padding)
    return wm.window2d(in_hw, k, stride=s, padding=pads, dilation=d)


def _after_steps(cap: LayerCapture, channel: int, y: int, x: int, value: float) -> list[dict[str, Any]]:
    steps = []
    for name, module, out in cap.after:
        result = _index(out, channel, y, x)
        step: dict[str, Any] = {"layer": name, "type": type(module).__name__, "input": value, "output": result}
        if isinstance(module, nn.BatchNorm2d):
            mean, var = float(module.running_mean[channel]), float(module.running_var[channel])
            gamma = float(module.weight[channel]) if module.weight is not None else 1.0
            beta = float(module.bias[channel]) if module.bias is not None else 0.0
            step.update(kind="norm", mean=mean, var=var, eps=module.eps, gamma=gamma, beta=beta,
                        formula="γ·(x − μ)/√(σ² + ε) + β")
        else:
            step.update(kind="activation", formula=_activation_formula(module))
        steps.append(step)
        value = result
    return steps


def _activation_formula(module: nn.Module) -> str:
    text = ACTIVATION_FORMULAS.get(type(module).__name__, type(module).__name__ + "(x)")
    return text.format(slope=getattr(module, "negative_slope", 0.01))


def conv_trace(cap: LayerCapture, module: nn.Conv2d, channel: int, y: int, x: int, top: int = 8) -> dict[str, Any]:
    """Every number behind output cell (channel, y, x) of a Conv2d, with large layers summarised: the
    ``top`` input channels contributing most (by |sum|) in full, the others as one number."""
    check_position(tuple(cap.output.shape), channel, y, x)
    c_in, h, w = cap.input.shape
    window = _conv_window(module, (h, w))
    cells = window.cells(y, x)
    per_group_in = module.in_channels // module.groups
    per_group_out = module.out_channels // module.groups
    group = channel // per_group_out
    first_in = group * per_group_in
    pad_top, pad_left = window.rows.pad_before, window.cols.pad_before
    source = cap.input.double()
    if module.padding_mode != "zeros" and (pad_top or pad_left or window.rows.pad_after or window.cols.pad_after):
        source = F.pad(source[None], (pad_left, window.cols.pad_after, pad_top, window.rows.pad_after), mode=module.padding_mode)[0]
    else:
        pad_top = pad_left = 0  # zero padding: padding cells read as 0 below, no padded copy needed
    rows = torch.tensor([iy + pad_top for *_k, iy, _ix, _p in cells]).clamp(0, source.shape[1] - 1)
    cols = torch.tensor([ix + pad_left for *_k, _iy, ix, _p in cells]).clamp(0, source.shape[2] - 1)
    is_pad = torch.tensor([p for *_rest, p in cells])
    channels = torch.arange(first_in, first_in + per_group_in)
    inputs = source[channels][:, rows, cols]  # per-group-in × taps
    if module.padding_mode == "zeros":
        inputs[:, is_pad] = 0.0
    kernels = module.weight[channel].detach().double().cpu().reshape(per_group_in, -1)
    products = inputs * kernels
    sums = products.sum(dim=1)
    bias = float(module.bias[channel]) if module.bias is not None else 0.0
    total = float(sums.sum()) + bias
    top = max(1, min(top, MAX_TOP))
    order = list(range(per_group_in)) if per_group_in <= top else torch.argsort(sums.abs(), descending=True)[:top].tolist()
    shown = set(order)
    rest = [j for j in range(per_group_in) if j not in shown]
    layer_value = _index(cap.output, channel, y, x)
    after = _after_steps(cap, channel, y, x, layer_value)
    padding_cells = [bool(p) for *_rest, p in cells]
    padded_by = None
    if cap.padded_by is not None:  # cells the previous ZeroPad2d added count as padding too
        pl, pr, pt, pb = cap.padded_by[1]
        padding_cells = [p or not (pt <= iy < h - pb and pl <= ix < w - pr) for p, (*_k, iy, ix, _q) in zip(padding_cells, cells)]
        padded_by = {"layer": cap.padded_by[0], "left": pl, "right": pr, "top": pt, "bottom": pb}
    return {
        "kind": "conv",
        "channel": channel, "y": y, "x": x,
        "input_shape": list(cap.input.shape), "output_shape": list(cap.output.shape),
        "geometry": {**window.as_json(), "groups": module.groups, "group": group,
                     "in_channels_per_group": per_group_in, "padding_mode": module.padding_mode},
        "cells": [[iy, ix] for *_k, iy, ix, _p in cells],
        "padding": padding_cells,
        "padded_by": padded_by,
        "channels": [{"index": first_in + j, "inputs": inputs[j].tolist(), "weights": kernels[j].tolist(),
                      "products": products[j].tolist(), "sum": float(sums[j])} for j in order],
        "rest": {"channels": len(rest), "sum": float(sums[rest].sum())} if rest else None,
        "sum_of_channels": float(sums.sum()),
        "bias": bias,
        "total": total,
        "layer_output": layer_value,
        "after": after,
        "final": after[-1]["output"] if after else layer_value,
    }


def pool_trace(cap: LayerCapture, module: nn.Module, channel: int, y: int, x: int) -> dict[str, Any]:
    """The window, the op and the result of one pooled cell (max, average, Lp, adaptive)."""
    check_position(tuple(cap.output.shape), channel, y, x)
    _c, h, w = cap.input.shape
    plane = cap.input[channel].double()
    info: dict[str, Any] = {"kind": "pool", "channel": channel, "y": y, "x": x, "type": type(module).__name__,
                            "input_shape": list(cap.input.shape), "output_shape": list(cap.output.shape)}
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        oh, ow = cap.output.shape[1:]
        y0, y1 = wm.adaptive_range(y, h, oh)
        x0, x1 = wm.adaptive_range(x, w, ow)
        cells = [(iy, ix, False) for iy in range(y0, y1) for ix in range(x0, x1)]
        op = "avg" if isinstance(module, nn.AdaptiveAvgPool2d) else "max"
        divisor = len(cells)
        info["geometry"] = {"adaptive": True, "window": [y1 - y0, x1 - x0]}
    else:
        k = _pair(module.kernel_size)
        s = _pair(module.stride if module.stride else module.kernel_size)
        p = _pair(getattr(module, "padding", 0))
        d = _pair(getattr(module, "dilation", 1))
        ceil = bool(getattr(module, "ceil_mode", False))
        window = wm.window2d((h, w), k, stride=s, padding=(p, p), dilation=d, ceil_mode=ceil)
        cells = [(iy, ix, pad) for *_k, iy, ix, pad in window.cells(y, x)]
        info["geometry"] = window.as_json()
        op = "max" if isinstance(module, nn.MaxPool2d) else "avg" if isinstance(module, nn.AvgPool2d) else "lp"
        divisor = _avg_divisor(module, (y, x), (h, w), k, s, p) if op == "avg" else len(cells)
    values = [None if pad else float(plane[iy, ix]) for iy, ix, pad in cells]
    real = [v for v in values if v is not None]
    if op == "max":
        result = max(real)
        info["argmax"] = values.index(result)
    elif op == "avg":
        info.update(sum=math.fsum(real), divisor=divisor)
        result = math.fsum(real) / divisor
    else:
        norm = float(module.norm_type)
        info.update(norm_type=norm, sum_of_powers=math.fsum(v**norm for v in real))
        result = info["sum_of_powers"] ** (1 / norm)
        op = "l2" if norm == 2 else f"l{norm:g}"
    info.update(op=op, cells=[[iy, ix] for iy, ix, _p in cells], padding=[p for _y, _x, p in cells],
                inputs=values, result=result, layer_output=_index(cap.output, channel, y, x))
    return info


def _avg_divisor(module: nn.Module, out: tuple[int, int], in_hw: tuple[int, int], k: tuple[int, int],
                 s: tuple[int, int], p: tuple[int, int]) -> int:
    """PyTorch's avg_pool2d divisor: the window clipped to the padded input (ceil mode may overhang),
    then to the real input unless ``count_include_pad``; ``divisor_override`` wins."""
    if getattr(module, "divisor_override", None):
        return int(module.divisor_override)
    sizes, real = [], []
    for a in range(2):
        start = out[a] * s[a] - p[a]
        end = min(start + k[a], in_hw[a] + p[a])
        sizes.append(end - start)
        real.append(min(end, in_hw[a]) - max(start, 0))
    return sizes[0] * sizes[1] if module.count_include_pad else real[0] * real[1]


def activation_trace(cap: LayerCapture, module: nn.Module, channel: int, y: int, x: int) -> dict[str, Any]:
    """Input, formula and output of one cell of an activation layer."""
    check_position(tuple(cap.output.shape), channel, y, x)
    return {"kind": "activation", "type": type(module).__name__, "channel": channel, "y": y, "x": x,
            "formula": _activation_formula(module), "input": _index(cap.input, channel, y, x),
            "output": _index(cap.output, channel, y, x), "output_shape": list(cap.output.shape)}


def layer_trace(cap: LayerCapture, module: nn.Module, channel: int, y: int, x: int, top: int) -> dict[str, Any]:
    """The trace for whatever kind of layer ``module`` is."""
    if isinstance(module, nn.Conv2d):
        return conv_trace(cap, module, channel, y, x, top)
    if isinstance(module, _POOLS):
        return pool_trace(cap, module, channel, y, x)
    if layer_kind(module) == "activation" and not isinstance(module, nn.Softmax):
        return activation_trace(cap, module, channel, y, x)
    raise ApiError(422, "layer_not_traceable",
                   f"Step-through covers convolution, pooling and activation layers; {type(module).__name__} is none of them.")


def softmax_trace(logits: torch.Tensor, categories: tuple[str, ...], top: int = 10) -> dict[str, Any]:
    """Softmax over a model's logits, as a lecture shows it: subtract the largest logit (it changes nothing
    but keeps e^z finite), exponentiate, sum, divide. The ``top`` classes in full, the others summed."""
    z = logits.detach().double().cpu().flatten()
    z_max = float(z.max())
    exps = torch.exp(z - z_max)
    total = float(exps.sum())
    probs = exps / total
    top = max(1, min(top, z.numel()))
    order = torch.argsort(probs, descending=True)[:top].tolist()
    others = z.numel() - len(order)
    return {
        "kind": "softmax",
        "max_logit": z_max,
        "sum_of_exponentials": total,
        "classes": [{"index": i, "label": categories[i] if i < len(categories) else str(i), "logit": float(z[i]),
                     "shifted": float(z[i]) - z_max, "exponential": float(exps[i]), "probability": float(probs[i])}
                    for i in order],
        "rest": {"classes": others, "exponential_sum": total - float(exps[order].sum()),
                 "probability": 1.0 - float(probs[order].sum())} if others else None,
        "num_classes": int(z.numel()),
    }
