"""Index math of sliding windows against PyTorch: unfold tells us which input cell each tap reads."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from server.services.step_through import window_math as wm

SIZES = (1, 2, 5, 7)
KERNELS = (1, 2, 3, 4)
STRIDES = (1, 2, 3)
DILATIONS = (1, 2)
PADDINGS = ("valid", "same", "full", 0, 1, 2, (0, 2), (2, 1))


def _padded_ids(n_rows: int, n_cols: int, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """Input whose cell (i, j) holds 1 + i·n_cols + j, zero-padded: a read of 0 means 'padding'."""
    ids = torch.arange(1, n_rows * n_cols + 1, dtype=torch.float64).reshape(1, 1, n_rows, n_cols)
    top, bottom, left, right = pads
    return F.pad(ids, (left, right, top, bottom))


def _expected_id(cell: tuple[int, int, int, int, bool], n_cols: int) -> float:
    _ky, _kx, iy, ix, pad = cell
    return 0.0 if pad else float(1 + iy * n_cols + ix)


CASES = [
    (n, k, s, d, p)
    for n, k, s, d, p in itertools.product(SIZES, KERNELS, STRIDES, DILATIONS, PADDINGS)
    if wm.effective_kernel(k, d) <= n + sum(wm.resolve_padding(p, n, k, s, d))
]


@pytest.mark.parametrize("n,k,s,d,p", CASES)
def test_cells_match_unfold(n: int, k: int, s: int, d: int, p: object) -> None:
    # a non-square input, with the column axis one cell wider, catches swapped axes
    window = wm.window2d((n, n + 1), (k, k), stride=s, padding=(p, p), dilation=d)
    pads = (window.rows.pad_before, window.rows.pad_after, window.cols.pad_before, window.cols.pad_after)
    x = _padded_ids(n, n + 1, pads)
    patches = F.unfold(x, (k, k), dilation=d, stride=s)  # 1 × k·k × L, row-major windows
    oh, ow = window.out_shape
    assert patches.shape[-1] == oh * ow
    for y in range(oh):
        for xo in range(ow):
            got = patches[0, :, y * ow + xo].tolist()
            want = [_expected_id(c, n + 1) for c in window.cells(y, xo)]
            assert got == want, (y, xo)


@pytest.mark.parametrize("n,k,s,d", [(n, k, s, d) for n, k, s, d in itertools.product(SIZES, KERNELS, STRIDES, DILATIONS)])
def test_output_size_matches_conv2d(n: int, k: int, s: int, d: int) -> None:
    for p in (0, 1, 2):
        ax = wm.axis(n, k, s, p, d)
        if wm.effective_kernel(k, d) > n + 2 * p:
            assert ax.out_size == 0
            continue
        out = F.conv2d(torch.zeros(1, 1, n, n), torch.zeros(1, 1, k, k), stride=s, padding=p, dilation=d)
        assert out.shape[-1] == ax.out_size


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize("n,k,d", list(itertools.product((3, 5, 6), (1, 2, 3, 4, 5), (1, 2))))
def test_same_stride_one_equals_pytorch_same(n: int, k: int, d: int) -> None:
    torch.manual_seed(n * 100 + k * 10 + d)
    x = torch.randn(1, 1, n, n, dtype=torch.float64)
    w = torch.randn(1, 1, k, k, dtype=torch.float64)
    before, after = wm.resolve_padding("same", n, k, 1, d)
    ours = F.conv2d(F.pad(x, (before, after, before, after)), w, dilation=d)
    theirs = F.conv2d(x, w, padding="same", dilation=d)
    assert torch.allclose(ours, theirs)


def test_same_is_keras_for_strides_and_even_kernels() -> None:
    # Keras/TF: out = ceil(n / s); the odd padding cell goes after (bottom/right)
    assert wm.resolve_padding("same", 28, 5, 2) == (1, 2)
    assert wm.axis(28, 5, 2, "same").out_size == 14
    assert wm.resolve_padding("same", 7, 2, 1) == (0, 1)
    assert wm.resolve_padding("same", 6, 3, 3) == (0, 0)
    assert wm.resolve_padding("same", 5, 3, 2) == (1, 1)
    for n, k, s in itertools.product(range(1, 12), range(1, 7), range(1, 4)):
        assert wm.axis(n, k, s, "same").out_size == -(-n // s)


def test_full_padding_gives_n_plus_k_minus_one() -> None:
    for n, k, d in itertools.product(range(1, 8), range(1, 5), (1, 2, 3)):
        assert wm.axis(n, k, 1, "full", d).out_size == n + wm.effective_kernel(k, d) - 1


def test_worked_example_five_by_five_three_by_three() -> None:
    # the lecture-slide case: 5×5 input, 3×3 kernel, no padding, stride 1 → 3×3 output
    window = wm.window2d((5, 5), (3, 3))
    assert window.out_shape == (3, 3)
    assert [(iy, ix) for _ky, _kx, iy, ix, _p in window.cells(1, 2)] == [
        (1, 2), (1, 3), (1, 4), (2, 2), (2, 3), (2, 4), (3, 2), (3, 3), (3, 4)]
    # stride 2, padding 1: output (0, 0) reads the top-left padding corner
    padded = wm.window2d((5, 5), (3, 3), stride=2, padding=1)
    assert padded.out_shape == (3, 3)
    assert [c[4] for c in padded.cells(0, 0)] == [True, True, True, True, False, False, True, False, False]
    # dilation 2 spreads the taps two cells apart
    dilated = wm.window2d((5, 5), (3, 3), dilation=2)
    assert dilated.out_shape == (1, 1)
    assert [(iy, ix) for _ky, _kx, iy, ix, _p in dilated.cells(0, 0)][:3] == [(0, 0), (0, 2), (0, 4)]


def test_asymmetric_padding_four_numbers() -> None:
    window = wm.window2d((4, 4), (3, 3), padding=(0, 2, 1, 0))  # top, bottom, left, right
    assert window.padding() == {"top": 0, "bottom": 2, "left": 1, "right": 0}
    assert window.out_shape == (4, 3)


def test_tiling_message() -> None:
    assert wm.window2d((5, 5), (3, 3), stride=2).tiling_message() is None
    message = wm.window2d((6, 5), (3, 3), stride=2).tiling_message()
    assert message is not None and "last 1 row" in message and "column" not in message
    assert "no output" in (wm.window2d((2, 2), (3, 3)).tiling_message() or "")


def test_formula_has_the_numbers() -> None:
    lines = wm.window2d((28, 28), (5, 5), stride=2, padding="same").formula()
    assert lines[0] == "height: ⌊(28 + 1 + 2 − 1·(5 − 1) − 1) / 2⌋ + 1 = 14"


@pytest.mark.parametrize("n,k,s,p", [(6, 3, 2, 1), (7, 3, 2, 0), (13, 3, 2, 0), (5, 2, 2, 1), (8, 3, 3, 1)])
def test_ceil_mode_output_size_matches_max_pool(n: int, k: int, s: int, p: int) -> None:
    out = F.max_pool2d(torch.zeros(1, 1, n, n), k, s, p, ceil_mode=True)
    assert wm.axis(n, k, s, p, ceil_mode=True).out_size == out.shape[-1]


def test_adaptive_range_matches_adaptive_avg_pool() -> None:
    x = torch.randn(1, 1, 7, 7, dtype=torch.float64)
    out = F.adaptive_avg_pool2d(x, 3)
    for oy, ox in itertools.product(range(3), range(3)):
        y0, y1 = wm.adaptive_range(oy, 7, 3)
        x0, x1 = wm.adaptive_range(ox, 7, 3)
        assert torch.isclose(x[0, 0, y0:y1, x0:x1].mean(), out[0, 0, oy, ox])


def test_bad_settings_raise() -> None:
    with pytest.raises(wm.WindowError):
        wm.resolve_padding("middle", 5, 3)
    with pytest.raises(wm.WindowError):
        wm.axis(5, 3, stride=0)
    with pytest.raises(wm.WindowError):
        wm.resolve_padding(-1, 5, 3)
    with pytest.raises(wm.WindowError):
        wm.axis(5, 3).taps(3)
