"""Pure index math of sliding windows: which input cells feed which output cell.

Everything here is integer arithmetic on one axis at a time (height and width are independent), with no
torch and no HTTP, so the same cases can be checked against PyTorch here and against the page's own copy
(``frontend/static/js/stepper/window-math.js``) in the browser.

Along one axis with input size ``n``, kernel ``k``, stride ``s``, dilation ``d`` and padding ``(pb, pa)``
(cells added before and after):

    k_eff  = d·(k − 1) + 1                      (the span a dilated kernel covers)
    n_out  = ⌊(n + pb + pa − k_eff) / s⌋ + 1     (``ceil_mode`` uses ⌈…⌉, as PyTorch's pools do)
    input index of output o, kernel tap t:  i = o·s − pb + t·d    (outside [0, n) ⇒ a padding cell)

Padding names:
  * ``valid``: no padding.
  * ``full``: k_eff − 1 on both sides, so every overlap of kernel and input gives an output.
  * ``same``: as Keras/TensorFlow define it: n_out = ⌈n / s⌉ and total = max((n_out − 1)·s + k_eff − n, 0),
    split ``before = total // 2``, ``after = total − before`` (the odd cell goes after: bottom/right).
    With stride 1 this is PyTorch's ``padding='same'`` too; PyTorch refuses 'same' for stride > 1.
  * an int ``p``: p on both sides; a pair ``(before, after)`` per axis for asymmetric padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PADDING_NAMES = ("valid", "same", "full")


class WindowError(ValueError):
    """Settings that describe no valid sliding window (the message is a sentence for a person)."""


def effective_kernel(kernel: int, dilation: int) -> int:
    """The number of input cells a dilated kernel spans along one axis."""
    return dilation * (kernel - 1) + 1


def resolve_padding(padding: Any, size: int, kernel: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding along one axis for a name, an int or a (before, after) pair."""
    k_eff = effective_kernel(kernel, dilation)
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0
        if padding == "full":
            return k_eff - 1, k_eff - 1
        if padding == "same":
            out = -(-size // stride)
            total = max((out - 1) * stride + k_eff - size, 0)
            return total // 2, total - total // 2
        raise WindowError(f"padding must be one of {', '.join(PADDING_NAMES)} or a number, not {padding!r}.")
    if isinstance(padding, (tuple, list)):
        if len(padding) != 2:
            raise WindowError("asymmetric padding along one axis is a pair (before, after).")
        before, after = int(padding[0]), int(padding[1])
    else:
        before = after = int(padding)
    if before < 0 or after < 0:
        raise WindowError("padding cannot be negative.")
    return before, after


def output_size(size: int, kernel: int, stride: int, pad_before: int, pad_after: int, dilation: int = 1,
                ceil_mode: bool = False) -> int:
    """Number of output cells along one axis (0 when the kernel does not fit)."""
    span = size + pad_before + pad_after - effective_kernel(kernel, dilation)
    if span < 0:
        return 0
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    # PyTorch's rule: the last window must start inside the input or the left padding.
    if (out - 1) * stride >= size + pad_before:
        out -= 1
    return out


@dataclass(frozen=True)
class AxisWindow:
    """The sliding window along one axis, with its padding resolved."""

    size: int
    kernel: int
    stride: int = 1
    dilation: int = 1
    pad_before: int = 0
    pad_after: int = 0
    ceil_mode: bool = False

    def __post_init__(self) -> None:
        if self.size < 1:
            raise WindowError("the input must have at least one cell along each axis.")
        if self.kernel < 1 or self.stride < 1 or self.dilation < 1:
            raise WindowError("kernel size, stride and dilation must be at least 1.")

    @property
    def k_eff(self) -> int:
        return effective_kernel(self.kernel, self.dilation)

    @property
    def out_size(self) -> int:
        return output_size(self.size, self.kernel, self.stride, self.pad_before, self.pad_after, self.dilation,
                           self.ceil_mode)

    def start(self, out_index: int) -> int:
        """Input index (may be negative: padding) under kernel tap 0 for output ``out_index``."""
        return out_index * self.stride - self.pad_before

    def taps(self, out_index: int) -> list[int]:
        """Input index under each kernel tap for output ``out_index`` (outside [0, size) = padding)."""
        if not 0 <= out_index < self.out_size:
            raise WindowError(f"output index {out_index} is outside 0..{self.out_size - 1}.")
        first = self.start(out_index)
        return [first + t * self.dilation for t in range(self.kernel)]

    def leftover(self) -> int:
        """Padded-input cells after the last window that no window reaches (0 when the settings tile)."""
        if self.out_size == 0:
            return 0
        padded = self.size + self.pad_before + self.pad_after
        return max(padded - ((self.out_size - 1) * self.stride + self.k_eff), 0)


def axis(size: int, kernel: int, stride: int = 1, padding: Any = 0, dilation: int = 1,
         ceil_mode: bool = False) -> AxisWindow:
    """An :class:`AxisWindow` from a padding name, int or pair."""
    if stride < 1 or dilation < 1 or kernel < 1:
        raise WindowError("kernel size, stride and dilation must be at least 1.")
    before, after = resolve_padding(padding, size, kernel, stride, dilation)
    return AxisWindow(size, kernel, stride, dilation, before, after, ceil_mode)


@dataclass(frozen=True)
class Window2d:
    """A 2-D sliding window: one :class:`AxisWindow` per axis."""

    rows: AxisWindow
    cols: AxisWindow

    @property
    def out_shape(self) -> tuple[int, int]:
        return self.rows.out_size, self.cols.out_size

    def cells(self, y: int, x: int) -> list[tuple[int, int, int, int, bool]]:
        """Row-major (ky, kx, iy, ix, is_padding) for every kernel tap of output (y, x)."""
        rows, cols = self.rows.taps(y), self.cols.taps(x)
        out = []
        for ky, iy in enumerate(rows):
            for kx, ix in enumerate(cols):
                pad = not (0 <= iy < self.rows.size and 0 <= ix < self.cols.size)
                out.append((ky, kx, iy, ix, pad))
        return out

    def padding(self) -> dict[str, int]:
        return {"top": self.rows.pad_before, "bottom": self.rows.pad_after,
                "left": self.cols.pad_before, "right": self.cols.pad_after}

    def tiling_message(self) -> str | None:
        """None when every padded-input cell is reached by some window, else a sentence saying what is lost."""
        if self.rows.out_size == 0 or self.cols.out_size == 0:
            padded_h = self.rows.size + self.rows.pad_before + self.rows.pad_after
            padded_w = self.cols.size + self.cols.pad_before + self.cols.pad_after
            return (f"The kernel (spanning {self.rows.k_eff}×{self.cols.k_eff} cells with its dilation) is larger than "
                    f"the padded input ({padded_h}×{padded_w}): there is no output.")
        parts = []
        if self.rows.leftover():
            parts.append(f"the last {self.rows.leftover()} row(s)")
        if self.cols.leftover():
            parts.append(f"the last {self.cols.leftover()} column(s)")
        if not parts:
            return None
        return ("These settings do not tile the input: " + " and ".join(parts)
                + " of the padded input are never under the window, so they do not affect the output.")

    def formula(self) -> list[str]:
        """The output-size formula with the current numbers, one line per axis."""
        lines = []
        for label, ax in (("height", self.rows), ("width", self.cols)):
            lines.append(
                f"{label}: ⌊({ax.size} + {ax.pad_before} + {ax.pad_after} − {ax.dilation}·({ax.kernel} − 1) − 1) / "
                f"{ax.stride}⌋ + 1 = {ax.out_size}")
        return lines

    def as_json(self) -> dict[str, Any]:
        return {
            "input_shape": [self.rows.size, self.cols.size],
            "kernel_shape": [self.rows.kernel, self.cols.kernel],
            "stride": [self.rows.stride, self.cols.stride],
            "dilation": [self.rows.dilation, self.cols.dilation],
            "padding": self.padding(),
            "output_shape": list(self.out_shape),
            "formula": self.formula(),
            "tiles": self.tiling_message() is None,
            "tiling_message": self.tiling_message(),
        }


def window2d(in_hw: tuple[int, int], kernel_hw: tuple[int, int], stride: Any = 1, padding: Any = 0,
             dilation: Any = 1, ceil_mode: bool = False) -> Window2d:
    """A :class:`Window2d`; stride/dilation are an int or a (rows, cols) pair; padding is a name, an int,
    a (rows, cols) pair of ints or pairs, or a dict with top/bottom/left/right."""
    s = _pair(stride)
    d = _pair(dilation)
    if isinstance(padding, dict):
        pads: tuple[Any, Any] = ((padding.get("top", 0), padding.get("bottom", 0)),
                                 (padding.get("left", 0), padding.get("right", 0)))
    elif isinstance(padding, (tuple, list)) and len(padding) == 2:
        pads = (padding[0], padding[1])
    elif isinstance(padding, (tuple, list)) and len(padding) == 4:  # top, bottom, left, right
        pads = ((padding[0], padding[1]), (padding[2], padding[3]))
    else:
        pads = (padding, padding)
    return Window2d(axis(in_hw[0], kernel_hw[0], s[0], pads[0], d[0], ceil_mode),
                    axis(in_hw[1], kernel_hw[1], s[1], pads[1], d[1], ceil_mode))


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[-1])
    return int(value), int(value)


def adaptive_range(out_index: int, in_size: int, out_size: int) -> tuple[int, int]:
    """[start, end) input cells that adaptive pooling averages for ``out_index`` (PyTorch's rule)."""
    start = (out_index * in_size) // out_size
    end = -(-((out_index + 1) * in_size) // out_size)
    return start, end
