"""The sandbox: convolution, pooling and activations on small grids a teacher types in, step by step.

Every output cell is computed from the window the index math (:mod:`server.services.step_through.window_math`) gives,
so the steps the page animates *are* the computation; tests check the results against ``F.conv2d``,
``max_pool2d``, ``avg_pool2d`` and ``lp_pool2d``. Sizes are bounded (input ≤ 16×16, kernel ≤ 7×7) so a
step list stays small enough to draw and send.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from server.errors import ApiError
from server.services.step_through import window_math as wm

MAX_INPUT = 16
MAX_KERNEL = 7
MAX_STRIDE = 8
MAX_DILATION = 6
MAX_PAD = 8
MAX_ABS_VALUE = 1e6

ACTIVATIONS = ("none", "relu", "leaky_relu", "relu6", "softplus", "abs")
POOL_OPS = ("max", "avg", "l2")
MODES = ("cross-correlation", "convolution")


def _invalid(code: str, message: str) -> ApiError:
    return ApiError(422, code, message)


def as_grid(values: Any, name: str, max_side: int) -> np.ndarray:
    """A rectangular float64 grid from nested lists, or a 422 that says what is wrong with it."""
    if not isinstance(values, Sequence) or not values or not all(isinstance(r, Sequence) and r for r in values):
        raise _invalid(f"invalid_{name}", f"{name} must be a non-empty list of non-empty rows of numbers.")
    width = len(values[0])
    if any(len(row) != width for row in values):
        raise _invalid(f"invalid_{name}", f"every row of {name} must have the same length ({width}).")
    if len(values) > max_side or width > max_side:
        raise _invalid(f"{name}_too_large",
                       f"{name} is {len(values)}×{width}; the sandbox allows at most {max_side}×{max_side}.")
    try:
        grid = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise _invalid(f"invalid_{name}", f"{name} must contain only numbers.") from None
    if not np.all(np.isfinite(grid)) or np.abs(grid).max() > MAX_ABS_VALUE:
        raise _invalid(f"invalid_{name}", f"{name} values must be finite numbers of magnitude at most {MAX_ABS_VALUE:g}.")
    return grid


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise _invalid(f"invalid_{name}", f"{name} must be between {low} and {high}, not {value}.")


def _window(in_hw: tuple[int, int], k_hw: tuple[int, int], stride: int, padding: Any, dilation: int) -> wm.Window2d:
    _check_range("stride", stride, 1, MAX_STRIDE)
    _check_range("dilation", dilation, 1, MAX_DILATION)
    if isinstance(padding, str) and padding not in wm.PADDING_NAMES:
        raise _invalid("invalid_padding", f"padding must be one of {', '.join(wm.PADDING_NAMES)} or a number.")
    if isinstance(padding, bool):
        raise _invalid("invalid_padding", "padding must be a name or a number.")
    for amount in (padding if isinstance(padding, (list, tuple)) else [padding]):
        if not isinstance(amount, str):
            _check_range("padding", int(amount), 0, MAX_PAD)
    if isinstance(padding, (list, tuple)) and len(padding) != 4:
        raise _invalid("invalid_padding", "asymmetric padding is four numbers: top, bottom, left, right.")
    try:
        window = wm.window2d(in_hw, k_hw, stride=stride, padding=padding, dilation=dilation)
    except wm.WindowError as exc:
        raise _invalid("invalid_window", str(exc)) from None
    if 0 in window.out_shape:
        raise _invalid("empty_output", window.tiling_message() or "These settings give no output.")
    return window


def activate(values: np.ndarray, name: str, slope: float = 0.01) -> np.ndarray:
    """ReLU-type activations as PyTorch defines them (softplus: β = 1, linear above 20)."""
    if name == "none":
        return values.copy()
    if name == "relu":
        return np.maximum(values, 0.0)
    if name == "leaky_relu":
        return np.where(values > 0, values, values * slope)
    if name == "relu6":
        return np.clip(values, 0.0, 6.0)
    if name == "softplus":
        return np.where(values > 20.0, values, np.log1p(np.exp(np.minimum(values, 20.0))))
    if name == "abs":
        return np.abs(values)
    raise _invalid("invalid_activation", f"activation must be one of {', '.join(ACTIVATIONS)}.")


ACTIVATION_FORMULAS = {
    "none": "f(x) = x",
    "relu": "f(x) = max(0, x)",
    "leaky_relu": "f(x) = x if x > 0 else {slope}·x",
    "relu6": "f(x) = min(max(0, x), 6)",
    "softplus": "f(x) = ln(1 + eˣ)",
    "abs": "f(x) = |x|",
}


def convolve(values: Any, kernel: Any, padding: Any = 0, stride: int = 1, dilation: int = 1,
             mode: str = "cross-correlation", bias: float = 0.0, activation: str = "none",
             slope: float = 0.01) -> dict[str, Any]:
    """One-channel convolution with every step: the output cell, the input cells under each tap
    (padding cells named), the products and their sum; then bias and the activation.

    ``mode='convolution'`` flips the kernel in both axes first (true convolution); the flipped kernel
    is returned as ``kernel_used``.
    """
    x = as_grid(values, "input", MAX_INPUT)
    k = as_grid(kernel, "kernel", MAX_KERNEL)
    if mode not in MODES:
        raise _invalid("invalid_mode", f"mode must be one of {', '.join(MODES)}.")
    if activation not in ACTIVATIONS:
        raise _invalid("invalid_activation", f"activation must be one of {', '.join(ACTIVATIONS)}.")
    if not math.isfinite(bias) or abs(bias) > MAX_ABS_VALUE:
        raise _invalid("invalid_bias", "bias must be a finite number.")
    used = k[::-1, ::-1] if mode == "convolution" else k
    window = _window(x.shape, k.shape, stride, padding, dilation)  # type: ignore[arg-type]
    oh, ow = window.out_shape
    out = np.zeros((oh, ow))
    steps = []
    flat_kernel = used.ravel()
    for y in range(oh):
        for xo in range(ow):
            cells = window.cells(y, xo)
            inputs = np.array([0.0 if pad else x[iy, ix] for _ky, _kx, iy, ix, pad in cells])
            products = inputs * flat_kernel
            total = float(products.sum())
            out[y, xo] = total
            steps.append({
                "out": [y, xo],
                "cells": [[iy, ix] for _ky, _kx, iy, ix, _pad in cells],
                "padding": [pad for *_rest, pad in cells],
                "inputs": inputs.tolist(),
                "products": products.tolist(),
                "sum": total,
            })
    pre = out + bias
    activated = activate(pre, activation, slope)
    for step in steps:
        y, xo = step["out"]
        step["total"] = float(pre[y, xo])
        step["activated"] = float(activated[y, xo])
    return {
        "output": out.tolist(),
        "with_bias": pre.tolist(),
        "activated": activated.tolist(),
        "kernel": k.tolist(),
        "kernel_used": used.tolist(),
        "mode": mode,
        "bias": bias,
        "activation": activation,
        "activation_formula": ACTIVATION_FORMULAS[activation].format(slope=slope),
        "geometry": window.as_json(),
        "steps": steps,
    }


def pool(values: Any, kernel_size: int, stride: int | None = None, padding: int = 0, op: str = "max") -> dict[str, Any]:
    """Max, average (padding counts as zeros, PyTorch's ``count_include_pad=True``) or L2 pooling
    (√Σx², PyTorch's ``lp_pool2d`` with p = 2; padding cells are zeros) with every step."""
    x = as_grid(values, "input", MAX_INPUT)
    if op not in POOL_OPS:
        raise _invalid("invalid_op", f"op must be one of {', '.join(POOL_OPS)}.")
    _check_range("kernel_size", kernel_size, 1, MAX_KERNEL)
    stride = kernel_size if stride is None else stride
    if padding * 2 > kernel_size:
        raise _invalid("invalid_padding", f"pool padding must be at most half the kernel size ({kernel_size // 2}).")
    window = _window(x.shape, (kernel_size, kernel_size), stride, padding, 1)  # type: ignore[arg-type]
    oh, ow = window.out_shape
    out = np.zeros((oh, ow))
    steps = []
    for y in range(oh):
        for xo in range(ow):
            cells = window.cells(y, xo)
            real = [x[iy, ix] for _ky, _kx, iy, ix, pad in cells if not pad]
            step: dict[str, Any] = {
                "out": [y, xo],
                "cells": [[iy, ix] for _ky, _kx, iy, ix, _pad in cells],
                "padding": [pad for *_rest, pad in cells],
                "inputs": [None if pad else float(x[iy, ix]) for _ky, _kx, iy, ix, pad in cells],
            }
            if op == "max":
                value = max(real)
                step["argmax"] = next(i for i, c in enumerate(cells) if not c[4] and x[c[2], c[3]] == value)
            elif op == "avg":
                step["sum"] = float(sum(real))
                step["divisor"] = len(cells)
                value = step["sum"] / len(cells)
            else:
                step["sum_of_squares"] = float(sum(v * v for v in real))
                value = math.sqrt(step["sum_of_squares"])
            out[y, xo] = value
            step["result"] = float(value)
            steps.append(step)
    return {"output": out.tolist(), "op": op, "geometry": window.as_json(), "steps": steps}


def shift(values: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Content moved down by dy and right by dx (negative: up/left); vacated cells are zero."""
    out = np.zeros_like(values)
    h, w = values.shape
    src = values[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
    out[max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
    return out


def translation_demo(values: Any, kernel: Any, dy: int, dx: int, pool_size: int = 2,
                     pool_op: str = "max") -> dict[str, Any]:
    """Translation equivariance: shift the input, convolve ('same', stride 1), compare with the shifted
    output (equal away from the borders the shift empties), and show how much a pool after it changes."""
    x = as_grid(values, "input", MAX_INPUT)
    if max(abs(dy), abs(dx)) >= min(x.shape):
        raise _invalid("invalid_shift", "the shift must be smaller than the input.")
    moved = shift(x, dy, dx)
    plain = np.array(convolve(x.tolist(), kernel, padding="same")["output"])
    after = np.array(convolve(moved.tolist(), kernel, padding="same")["output"])
    expected = shift(plain, dy, dx)
    # Where the two must agree: the output cell is not in the strip the shift emptied, and its window does
    # not reach past the far border (content pushed out of the frame is lost). Elsewhere they may differ.
    kh, kw = np.array(kernel).shape
    interior = np.zeros_like(plain, dtype=bool)
    (pt, pb), (pl, pr) = wm.resolve_padding("same", x.shape[0], kh), wm.resolve_padding("same", x.shape[1], kw)
    y0, y1 = _agreeing_range(dy, x.shape[0], pt, pb)
    x0, x1 = _agreeing_range(dx, x.shape[1], pl, pr)
    interior[y0:y1, x0:x1] = True
    diff = np.abs(after - expected)
    pooled_plain = np.array(pool(plain.tolist(), pool_size, pool_size, 0, pool_op)["output"])
    pooled_after = np.array(pool(after.tolist(), pool_size, pool_size, 0, pool_op)["output"])
    pool_change = np.abs(pooled_after - pooled_plain)
    pool_scale = max(float(np.abs(pooled_plain).max()), float(np.abs(pooled_after).max()), 1e-12)
    out_scale = max(float(np.abs(plain).max()), float(np.abs(after).max()), 1e-12)
    return {
        "input": x.tolist(),
        "shifted_input": moved.tolist(),
        "output": plain.tolist(),
        "shifted_output": after.tolist(),
        "output_shifted_by_same": expected.tolist(),
        "interior": interior.tolist(),
        "max_difference_interior": float(diff[interior].max()) if interior.any() else None,
        "pooled": pooled_plain.tolist(),
        "pooled_shifted": pooled_after.tolist(),
        # How much each map changes *at the same positions* when the input moves: pooling should change less.
        "output_unchanged_fraction": float(np.mean(np.abs(after - plain) <= 1e-9 * out_scale)),
        "pool_unchanged_fraction": float(np.mean(pool_change <= 1e-9 * pool_scale)),
        "output_relative_change": _relative_change(plain, after),
        "pool_relative_change": _relative_change(pooled_plain, pooled_after),
    }


def _agreeing_range(d: int, n: int, pad_before: int, pad_after: int) -> tuple[int, int]:
    """[start, end) of output rows (or columns) where conv(shift(x)) = shift(conv(x)) for a shift by d."""
    if d > 0:
        return d, n - pad_after
    if d < 0:
        return pad_before, n + d
    return 0, n


def _relative_change(before: np.ndarray, after: np.ndarray) -> float:
    """‖after − before‖ / max(‖before‖, ‖after‖): 0 = unchanged, 1 = as large as the map itself."""
    scale = max(float(np.linalg.norm(before)), float(np.linalg.norm(after)), 1e-12)
    return float(np.linalg.norm(after - before) / scale)


MAX_MIX_CHANNELS = 8  # input and output channels of the 1×1 (channel-mixing) demo
MAX_MIX_SIDE = 8


def mix_channels(channels: Any, weights: Any, bias: Any = None) -> dict[str, Any]:
    """A 1×1 convolution over several channels: out[o, y, x] = Σ_c w[o, c] · in[c, y, x] + b[o].

    ``channels`` is C_in grids of the same H×W, ``weights`` a C_out×C_in matrix (the 1×1 kernels), ``bias``
    C_out numbers (zeros when omitted). Every output cell is the same weighted mix of the channels at that one
    position: no neighbours are read, only channels are mixed. Each output cell's products and sum are returned.
    """
    if not isinstance(channels, Sequence) or not 1 <= len(channels) <= MAX_MIX_CHANNELS:
        raise _invalid("invalid_channels", f"channels must be a list of 1 to {MAX_MIX_CHANNELS} grids.")
    grids = [as_grid(c, "channel", MAX_MIX_SIDE) for c in channels]
    if any(g.shape != grids[0].shape for g in grids):
        raise _invalid("invalid_channels", "every channel must have the same height and width.")
    x = np.stack(grids)  # C_in×H×W
    w = as_grid(weights, "weights", MAX_MIX_CHANNELS)
    if w.shape[1] != x.shape[0]:
        raise _invalid("invalid_weights", f"weights must have one column per input channel ({x.shape[0]}); got {w.shape[1]}.")
    b = np.zeros(w.shape[0]) if bias is None else np.asarray(as_grid([bias], "bias", MAX_MIX_CHANNELS)[0])
    if b.shape != (w.shape[0],):
        raise _invalid("invalid_bias", f"bias must have one number per output channel ({w.shape[0]}).")
    products = w[:, :, None, None] * x[None]  # C_out×C_in×H×W
    out = products.sum(axis=1) + b[:, None, None]
    return {
        "output": out.tolist(),
        "weights": w.tolist(),
        "bias": b.tolist(),
        "shape": {"in": list(x.shape), "out": list(out.shape)},
        # products[o][c] is the H×W grid w[o, c]·in[c]: the page reads any cell's terms from it
        "products": products.tolist(),
        "parameters": int(w.size + b.size),
    }
