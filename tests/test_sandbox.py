"""Sandbox convolution, pooling and activations against PyTorch, and the lecture-slide worked examples."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from server.errors import ApiError
from server.services.sandbox import kernel_presets
from server.services.sandbox import operations as sandbox
from server.services.step_through import window_math as wm


def _torch_conv(x: np.ndarray, k: np.ndarray, padding, stride: int, dilation: int, mode: str) -> np.ndarray:
    before_h, after_h = wm.resolve_padding(padding, x.shape[0], k.shape[0], stride, dilation)
    before_w, after_w = wm.resolve_padding(padding, x.shape[1], k.shape[1], stride, dilation)
    xt = F.pad(torch.from_numpy(x)[None, None], (before_w, after_w, before_h, after_h))
    kt = torch.from_numpy(k.copy())
    if mode == "convolution":
        kt = torch.flip(kt, dims=(0, 1))
    return F.conv2d(xt, kt[None, None], stride=stride, dilation=dilation)[0, 0].numpy()


CONV_CASES = list(itertools.product(("valid", "same", "full", 0, 1, 2), (1, 2, 3), (1, 2),
                                    ("cross-correlation", "convolution")))


@pytest.mark.parametrize("padding,stride,dilation,mode", CONV_CASES)
def test_convolve_equals_conv2d_on_random_inputs(padding, stride: int, dilation: int, mode: str) -> None:
    rng = np.random.default_rng(hash((str(padding), stride, dilation, mode)) % 2**32)
    for shape, kshape in (((7, 9), (3, 3)), ((8, 6), (2, 3)), ((16, 16), (5, 5)), ((6, 6), (1, 1))):
        x = rng.normal(size=shape)
        k = rng.normal(size=kshape)
        if wm.effective_kernel(max(kshape), dilation) > min(shape) + 2 * min(
                sum(wm.resolve_padding(padding, n, kk, stride, dilation)) for n, kk in zip(shape, kshape)):
            continue
        answer = sandbox.convolve(x.tolist(), k.tolist(), padding, stride, dilation, mode)
        expected = _torch_conv(x, k, padding, stride, dilation, mode)
        np.testing.assert_allclose(np.array(answer["output"]), expected, rtol=1e-12, atol=1e-12)
        assert answer["geometry"]["output_shape"] == list(expected.shape)
        # every step's sum is its products' sum and is the output cell
        for step in answer["steps"]:
            y, xo = step["out"]
            assert step["sum"] == pytest.approx(sum(step["products"]), abs=1e-12)
            assert step["sum"] == answer["output"][y][xo]
            for (iy, ix), pad, value in zip(step["cells"], step["padding"], step["inputs"]):
                inside = 0 <= iy < shape[0] and 0 <= ix < shape[1]
                assert pad == (not inside)
                assert value == (x[iy, ix] if inside else 0.0)


def test_asymmetric_padding_equals_conv2d_of_padded_input() -> None:
    rng = np.random.default_rng(3)
    x, k = rng.normal(size=(6, 7)), rng.normal(size=(3, 3))
    answer = sandbox.convolve(x.tolist(), k.tolist(), padding=[0, 2, 1, 0], stride=2)
    xt = F.pad(torch.from_numpy(x)[None, None], (1, 0, 0, 2))
    expected = F.conv2d(xt, torch.from_numpy(k)[None, None], stride=2)[0, 0].numpy()
    np.testing.assert_allclose(answer["output"], expected, rtol=1e-12)


def test_worked_example_classic_slide() -> None:
    # 5×5 binary image ⊛ 3×3 "X" kernel → the 3×3 map printed on countless lecture slides
    image = kernel_presets.EXAMPLES["slide_5x5"][1]
    kernel = [[1, 0, 1], [0, 1, 0], [1, 0, 1]]
    answer = sandbox.convolve(image, kernel)
    assert answer["output"] == [[4, 3, 4], [2, 4, 3], [2, 3, 4]]
    first = answer["steps"][0]
    assert first["products"] == [1, 0, 1, 0, 1, 0, 0, 0, 1]
    assert first["cells"][:3] == [[0, 0], [0, 1], [0, 2]]


def test_worked_example_vertical_edge() -> None:
    image = kernel_presets.EXAMPLES["vertical_step_6x6"][1]
    kernel = [[1, 0, -1]] * 3
    assert sandbox.convolve(image, kernel)["output"] == [[0, 30, 30, 0]] * 4


def test_true_convolution_of_an_impulse_reproduces_the_kernel() -> None:
    impulse = kernel_presets.EXAMPLES["impulse_7x7"][1]
    kernel = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    conv = sandbox.convolve(impulse, kernel, padding="same", mode="convolution")
    corr = sandbox.convolve(impulse, kernel, padding="same")
    centre = lambda out: [row[2:5] for row in out[2:5]]  # noqa: E731
    assert centre(conv["output"]) == kernel
    assert centre(corr["output"]) == [[9, 8, 7], [6, 5, 4], [3, 2, 1]]
    assert conv["kernel_used"] == [[9, 8, 7], [6, 5, 4], [3, 2, 1]]


def test_bias_and_activations_match_torch() -> None:
    rng = np.random.default_rng(5)
    x, k = rng.normal(size=(6, 6)) * 3, rng.normal(size=(3, 3))
    for name, fn in (("relu", F.relu), ("leaky_relu", lambda t: F.leaky_relu(t, 0.1)), ("relu6", F.relu6),
                     ("softplus", F.softplus), ("abs", torch.abs), ("none", lambda t: t)):
        answer = sandbox.convolve(x.tolist(), k.tolist(), bias=0.7, activation=name, slope=0.1)
        pre = torch.tensor(answer["output"], dtype=torch.float64) + 0.7
        np.testing.assert_allclose(answer["with_bias"], pre.numpy(), rtol=1e-12)
        np.testing.assert_allclose(answer["activated"], fn(pre).numpy(), rtol=1e-12, atol=1e-12)
        assert answer["steps"][4]["activated"] == answer["activated"][1][0]


def test_softplus_large_inputs_stay_linear() -> None:
    values = np.array([-50.0, 0.0, 19.0, 21.0, 500.0])
    np.testing.assert_allclose(sandbox.activate(values, "softplus"), F.softplus(torch.tensor(values)).numpy())


POOL_CASES = [c for c in itertools.product((1, 2, 3), (None, 1, 2, 3), (0, 1)) if c[2] * 2 <= c[0]]


@pytest.mark.parametrize("kernel_size,stride,padding", POOL_CASES)
def test_pools_equal_torch(kernel_size: int, stride, padding: int) -> None:
    rng = np.random.default_rng(kernel_size * 31 + (stride or 0) * 7 + padding)
    for shape in ((7, 7), (6, 9), (16, 16)):
        x = rng.normal(size=shape)
        xt = torch.from_numpy(x)[None, None]
        s = stride or kernel_size
        expected = {
            "max": F.max_pool2d(xt, kernel_size, s, padding),
            "avg": F.avg_pool2d(xt, kernel_size, s, padding),
            "l2": F.lp_pool2d(F.pad(xt, (padding,) * 4), 2, kernel_size, s),
        }
        for op, want in expected.items():
            answer = sandbox.pool(x.tolist(), kernel_size, stride, padding, op)
            np.testing.assert_allclose(answer["output"], want[0, 0].numpy(), rtol=1e-10, atol=1e-12)
            assert [s["result"] for s in answer["steps"]] == np.array(answer["output"]).ravel().tolist()


def test_pool_worked_example() -> None:
    grid = kernel_presets.EXAMPLES["pool_4x4"][1]
    assert sandbox.pool(grid, 2, 2, 0, "max")["output"] == [[6, 8], [3, 4]]
    assert sandbox.pool(grid, 2, 2, 0, "avg")["output"] == [[3.25, 5.25], [2, 2]]
    step = sandbox.pool(grid, 2, 2, 0, "max")["steps"][1]
    assert step["inputs"][step["argmax"]] == 8


def test_limits_are_clear_422s() -> None:
    big = [[0.0] * 17] * 17
    with pytest.raises(ApiError) as info:
        sandbox.convolve(big, [[1.0]])
    assert info.value.status == 422 and info.value.code == "input_too_large"
    with pytest.raises(ApiError) as info:
        sandbox.convolve([[1.0] * 5] * 5, [[1.0] * 8] * 8)
    assert info.value.code == "kernel_too_large"
    with pytest.raises(ApiError) as info:
        sandbox.convolve([[1.0] * 3] * 3, [[1.0] * 5] * 5)
    assert info.value.code == "empty_output" and "larger than the padded input" in info.value.message
    with pytest.raises(ApiError):
        sandbox.convolve([[1.0, 2.0], [3.0]], [[1.0]])
    with pytest.raises(ApiError):
        sandbox.convolve([[float("inf")]], [[1.0]])
    with pytest.raises(ApiError):
        sandbox.pool([[1.0] * 4] * 4, 2, 2, 2, "max")


def test_tiling_message_in_geometry() -> None:
    answer = sandbox.convolve([[1.0] * 6] * 6, [[1.0] * 3] * 3, stride=2)
    assert answer["geometry"]["tiles"] is False
    assert "last 1 row" in answer["geometry"]["tiling_message"]


def test_translation_equivariance_demo() -> None:
    grid = kernel_presets.EXAMPLES["square_10x10"][1]
    kernel = kernel_presets.KERNELS["sobel_x"][1]
    answer = sandbox.translation_demo(grid, kernel, 0, 1)
    assert answer["max_difference_interior"] == 0.0
    assert answer["shifted_input"][4][4] == grid[4][3]
    assert 0.0 <= answer["pool_unchanged_fraction"] <= 1.0
    # a one-column shift changes the max-pooled map less than the raw map, at the same positions
    assert answer["pool_relative_change"] < answer["output_relative_change"]
    plain, moved = np.array(answer["output"]), np.array(answer["shifted_output"])
    assert answer["output_relative_change"] == pytest.approx(
        np.linalg.norm(moved - plain) / max(np.linalg.norm(plain), np.linalg.norm(moved)))


@pytest.mark.parametrize("dy,dx,k", [(0, 1, 3), (1, 0, 3), (-2, 1, 3), (2, -3, 5), (1, 1, 2)])
def test_equivariance_holds_exactly_on_the_interior_and_interior_is_tight(dy: int, dx: int, k: int) -> None:
    rng = np.random.default_rng(abs(dy * 7 + dx * 3 + k))
    x = rng.normal(size=(9, 10))
    kernel = rng.normal(size=(k, k))
    answer = sandbox.translation_demo(x.tolist(), kernel.tolist(), dy, dx)
    inside = np.array(answer["interior"])
    diff = np.abs(np.array(answer["shifted_output"]) - np.array(answer["output_shifted_by_same"]))
    assert inside.any() and answer["max_difference_interior"] < 1e-12
    assert diff[inside].max() < 1e-12
    assert (diff[~inside] > 1e-9).mean() > 0.5  # the excluded cells do differ, mostly: the region is not padded out


def test_gabor_is_zero_mean_and_oriented() -> None:
    g = np.array(kernel_presets.gabor(7, theta_deg=0, wavelength=4))
    assert abs(g.mean()) < 1e-3 and np.abs(g).max() == pytest.approx(1.0, abs=1e-3)
    # θ = 0: a grating along x, so every row... columns vary, the centre row is symmetric
    np.testing.assert_allclose(g[3], g[3][::-1], atol=1e-4)
    rotated = np.array(kernel_presets.gabor(7, theta_deg=90, wavelength=4))
    np.testing.assert_allclose(rotated, g.T, atol=1e-3)
