"""Preprocessing constructors: each returns a callable PIL image → float32 C×H×W tensor.

The registry holds the constructor, not the callable, so every loaded model gets its own instance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps


@dataclass(frozen=True)
class Preprocess:
    """PIL image → float32 C×H×W tensor, plus the per-channel normalisation it ends with, so that the
    page can show the model's input as a picture by undoing exactly that (x·std + mean)."""

    fn: Callable[[Image.Image], torch.Tensor]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.fn(image)

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
SHAPES_MEAN, SHAPES_STD = 0.5, 0.5


def mnist_style(mean: float = MNIST_MEAN, std: float = MNIST_STD) -> Preprocess:
    """Greyscale 28×28 in MNIST's convention: a light digit on a dark background, centred.

    Images that are already 28×28 (MNIST samples) are used as they are (inverted when their
    background is light). Anything else — a phone photo of a digit, a drawing — is framed the way
    MNIST's digits were: ink cropped, fitted in a 20×20 box and centred by its centre of mass.
    """

    def apply(image: Image.Image) -> torch.Tensor:
        grey = np.asarray(ImageOps.grayscale(image), dtype=np.float32) / 255.0
        if _border_mean(grey) > 0.5:
            grey = 1.0 - grey
        if grey.shape != (28, 28):
            grey = _frame_like_mnist(grey)
        tensor = torch.from_numpy(np.ascontiguousarray(grey, dtype=np.float32))[None]
        return (tensor - mean) / std

    return Preprocess(apply, (mean,), (std,))


def _border_mean(grey: np.ndarray) -> float:
    edges = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return float(edges.mean())


def _frame_like_mnist(grey: np.ndarray) -> np.ndarray:
    ink = grey > 0.2 * max(float(grey.max()), 1e-6)
    canvas = np.zeros((28, 28), dtype=np.float32)
    if not ink.any():
        resized = Image.fromarray((grey * 255).astype(np.uint8)).resize((28, 28), Image.BILINEAR)
        return np.asarray(resized, dtype=np.float32) / 255.0
    rows, cols = np.nonzero(ink)
    crop = grey[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = crop.shape
    scale = 20.0 / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    digit = Image.fromarray((crop * 255).astype(np.uint8)).resize((nw, nh), Image.LANCZOS)
    digit_arr = np.asarray(digit, dtype=np.float32) / 255.0
    total = digit_arr.sum()
    if total > 0:
        cy = (digit_arr.sum(axis=1) * np.arange(nh)).sum() / total
        cx = (digit_arr.sum(axis=0) * np.arange(nw)).sum() / total
    else:
        cy, cx = nh / 2, nw / 2
    top = int(np.clip(round(14 - cy), 0, 28 - nh))
    left = int(np.clip(round(14 - cx), 0, 28 - nw))
    canvas[top : top + nh, left : left + nw] = digit_arr
    return canvas


def rgb_square(size: int, mean: float = SHAPES_MEAN, std: float = SHAPES_STD) -> Preprocess:
    """RGB resized so the shorter side is ``size``, centre-cropped to size×size, then normalised."""

    def apply(image: Image.Image) -> torch.Tensor:
        square = centre_square(image.convert("RGB"))
        resized = square.resize((size, size), Image.BILINEAR)
        arr = np.asarray(resized, dtype=np.float32) / 255.0
        tensor = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
        return (tensor - mean) / std

    return Preprocess(apply, (mean,) * 3, (std,) * 3)


def torchvision_transforms(weights_enum_member: object) -> Preprocess:
    """The weights' own inference transforms (resize, crop, ImageNet normalisation)."""
    transforms = weights_enum_member.transforms()  # type: ignore[attr-defined]

    def apply(image: Image.Image) -> torch.Tensor:
        rgb = image.convert("RGB")
        w, h = rgb.size
        if max(w, h) > 2 * min(w, h):
            # Resize-then-centre-crop keeps only the central square anyway; cropping to it first gives the
            # same pixels and stops a 1×10000 strip from being resized to 256×2,560,000.
            rgb = centre_square(rgb)
        return transforms(rgb).to(torch.float32)

    return Preprocess(apply, tuple(float(m) for m in transforms.mean), tuple(float(s) for s in transforms.std))


def centre_square(image: Image.Image) -> Image.Image:
    """The largest centred square of ``image``."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return image.crop((left, top, left + side, top + side))


_INTERPOLATIONS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
                   "lanczos": Image.LANCZOS}


def resize_crop_normalise(
    height: int,
    width: int,
    resize: int | None = None,
    mean: tuple[float, ...] = (0.0,),
    std: tuple[float, ...] = (1.0,),
    interpolation: str = "bilinear",
    grayscale: bool = False,
) -> Preprocess:
    """The usual inference transform: with ``resize``, the shorter side is resized to it and the centre
    height×width cropped (torchvision's / timm's Resize + CenterCrop); without, the whole image is resized
    to height×width. Then to [0, 1], minus ``mean``, over ``std`` (one value per channel, or one for all)."""
    channels = 1 if grayscale else 3
    mean_t = tuple(float(m) for m in mean) * (channels if len(mean) == 1 else 1)
    std_t = tuple(float(s) for s in std) * (channels if len(std) == 1 else 1)
    if len(mean_t) != channels or len(std_t) != channels:
        raise ValueError(f"mean and std need 1 or {channels} values")
    resample = _INTERPOLATIONS[interpolation]
    mean_v = torch.tensor(mean_t, dtype=torch.float32)[:, None, None]
    std_v = torch.tensor(std_t, dtype=torch.float32)[:, None, None]

    def apply(image: Image.Image) -> torch.Tensor:
        picture = image.convert("L" if grayscale else "RGB")
        if resize is None:
            picture = picture.resize((width, height), resample)
        else:
            w, h = picture.size
            if max(w, h) > 2 * min(w, h):  # a long strip: only its centre survives the crop anyway
                picture = centre_square(picture)
                w, h = picture.size
            # torchvision's Resize(int) rule: the shorter side becomes ``resize``, the longer is truncated
            new_w, new_h = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
            if (new_w, new_h) != (w, h):
                picture = picture.resize((new_w, new_h), resample)
            left = int(round((new_w - width) / 2.0))
            top = int(round((new_h - height) / 2.0))
            if new_w < width or new_h < height:  # torchvision pads a too-small image with zeros
                canvas = Image.new(picture.mode, (max(new_w, width), max(new_h, height)))
                canvas.paste(picture, (max(0, (width - new_w) // 2), max(0, (height - new_h) // 2)))
                picture, new_w, new_h = canvas, canvas.size[0], canvas.size[1]
                left, top = int(round((new_w - width) / 2.0)), int(round((new_h - height) / 2.0))
            picture = picture.crop((left, top, left + width, top + height))
        arr = np.asarray(picture, dtype=np.float32) / 255.0
        tensor = torch.from_numpy(np.ascontiguousarray(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)))
        return (tensor - mean_v) / std_v

    return Preprocess(apply, mean_t, std_t)
