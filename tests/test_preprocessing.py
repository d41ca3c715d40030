"""Preprocessing constructors: MNIST framing, RGB squares, torchvision's own transforms."""

from __future__ import annotations

import numpy as np
import torch
import torchvision
from PIL import Image

from models.preprocessing import MNIST_MEAN, MNIST_STD, mnist_style, rgb_square, torchvision_transforms


def test_mnist_digit_passes_through_unchanged() -> None:
    rng = np.random.default_rng(0)
    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[6:22, 10:18] = rng.integers(100, 256, (16, 8), dtype=np.uint8)
    tensor = mnist_style()(Image.fromarray(digit).convert("RGB"))
    expected = (torch.from_numpy(digit.astype(np.float32) / 255.0) - MNIST_MEAN) / MNIST_STD
    assert tensor.shape == (1, 28, 28)
    torch.testing.assert_close(tensor[0], expected)


def test_dark_ink_on_light_paper_is_inverted() -> None:
    digit = np.full((28, 28), 255, dtype=np.uint8)
    digit[5:23, 13:15] = 0
    tensor = mnist_style()(Image.fromarray(digit))
    raw = tensor[0] * MNIST_STD + MNIST_MEAN
    assert raw[0, 0] < 0.01 and raw[10, 13] > 0.99


def test_rgb_square_centre_crops_and_normalises() -> None:
    image = Image.new("RGB", (300, 100), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 100, 100))  # the left third is blue: cropped away
    tensor = rgb_square(64)(image)
    assert tensor.shape == (3, 64, 64)
    torch.testing.assert_close(tensor[:, 32, 32], torch.tensor([1.0, -1.0, -1.0]))


def test_torchvision_transforms_are_the_weights_own() -> None:
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    torch.testing.assert_close(torchvision_transforms(weights)(image), weights.transforms()(image))


def test_extreme_aspect_ratio_stays_cheap_and_correct_size() -> None:
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    strip = Image.new("RGB", (1, 2048), (40, 80, 120))
    tensor = torchvision_transforms(weights)(strip)
    assert tensor.shape == (3, 224, 224) and torch.isfinite(tensor).all()
