"""The images a run trains on and is measured on, and the augmentations, for every dataset ConvScope trains.

- MNIST: with the 60k training images when they are here, the standard 60k/10k split. Offline they are
  missing; then the first 8,000 *test* digits train and the last 2,000 (test[8000:]), never seen in
  training, are held out. That is what the bundled MNIST models were trained and measured on.
- Fashion-MNIST: only a 6,978-image prefix of its test images exists offline (see the data README): the
  first 5,000 train and the other 1,978 are held out.
- Shapes (generated): train / val / test splits with distinct seeds; the test split is held out.

Images stay uint8 N×C×H×W in memory; a batch is made float, augmented and normalised as it is drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.datasets import mnist, shapes
from models.preprocessing import MNIST_MEAN, MNIST_STD, SHAPES_MEAN, SHAPES_STD

MNIST_FALLBACK_TRAIN = 8_000  # test digits 0…7999 train when the real training images are missing
FASHION_TRAIN = 5_000  # of the 6,978 Fashion-MNIST images available offline
FASHION_IMAGES = "fashion-mnist/t10k-images-idx3-ubyte.first6978.gz"
FASHION_LABELS = "fashion-mnist/t10k-labels-idx1-ubyte.first6978.gz"
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
MNIST_CLASSES = tuple(str(d) for d in range(10))
CLASSES = {"mnist": MNIST_CLASSES, "fashion-mnist": FASHION_CLASSES, "shapes": tuple(shapes.CLASSES)}
TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "shapes": "Shapes (synthetic)"}


class DataUnavailable(FileNotFoundError):
    """The dataset's files are not in the data directory; the message says which and where."""


@dataclass
class TrainingData:
    dataset: str  # title, e.g. "MNIST"
    classes: tuple[str, ...]
    train_x: torch.Tensor  # uint8 N×C×H×W
    train_y: torch.Tensor  # int64 N
    test_x: torch.Tensor  # held out: never trained on
    test_y: torch.Tensor
    val_x: torch.Tensor | None
    val_y: torch.Tensor | None
    mean: float | torch.Tensor  # one for every channel, or per channel (C×1×1: an image folder)
    std: float | torch.Tensor
    train_source: str
    test_set: str

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]


def _nchw(images: np.ndarray) -> torch.Tensor:
    array = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(array))


def load(dataset: str, data_dir: str | Path | None, train_size: int | None, download: bool = False) -> TrainingData:
    """The training and held-out images of ``dataset`` (``mnist``, ``fashion-mnist``, ``shapes``), the
    training set cut to its first ``train_size`` images when given."""
    if dataset == "mnist":
        return mnist_data(data_dir, download, train_size)
    if dataset == "fashion-mnist":
        return fashion_data(data_dir, train_size)
    if dataset == "shapes":
        return shapes_data(train_size)
    raise ValueError(f"unknown dataset {dataset!r}")


def mnist_data(data_dir: str | Path | None, download: bool, limit: int | None) -> TrainingData:
    found = mnist.find_data_dir(data_dir)
    train = mnist.load_mnist_train(data_dir if data_dir is not None else found, download=download)
    test_x, test_y = _mnist_test(found, download)
    if train is not None:
        train_x, train_y = train
        n = len(train_x) if limit is None else min(limit, len(train_x))
        source = "mnist-train-60k" if n == 60_000 else f"mnist-train[:{n}]"
        return TrainingData(TITLES["mnist"], MNIST_CLASSES, _nchw(train_x[:n]), torch.from_numpy(train_y[:n]),
                            _nchw(test_x), torch.from_numpy(test_y), None, None, MNIST_MEAN, MNIST_STD, source,
                            f"the MNIST test set ({len(test_x):,} images, never used in training)")
    n = MNIST_FALLBACK_TRAIN if limit is None else min(limit, MNIST_FALLBACK_TRAIN)
    held = slice(MNIST_FALLBACK_TRAIN, len(test_x))
    last = len(test_x) - 1
    return TrainingData(
        "MNIST", MNIST_CLASSES, _nchw(test_x[:n]), torch.from_numpy(test_y[:n]), _nchw(test_x[held]),
        torch.from_numpy(test_y[held]), None, None, MNIST_MEAN, MNIST_STD,
        f"mnist-test[:{n}] (train images unavailable)",
        f"MNIST test images {MNIST_FALLBACK_TRAIN}–{last} ({last - MNIST_FALLBACK_TRAIN + 1:,} never used in training)",
    )


def _mnist_test(found: Path | None, download: bool) -> tuple[np.ndarray, np.ndarray]:
    for root in (found, mnist.DEFAULT_DOWNLOAD_ROOT):
        if root is not None:
            try:
                return mnist.load_mnist_test(root)
            except FileNotFoundError:
                pass
    if not download:
        raise DataUnavailable(
            "MNIST test images not found: pass a data directory holding mnist/t10k-images-idx3-ubyte.gz, "
            f"set {mnist.ENV_VAR}, or use download=True"
        )
    import torchvision  # deferred: only the download path needs it

    torchvision.datasets.MNIST(str(mnist.DEFAULT_DOWNLOAD_ROOT), train=False, download=True)
    return mnist.load_mnist_test(mnist.DEFAULT_DOWNLOAD_ROOT)


def fashion_data(data_dir: str | Path | None, limit: int | None) -> TrainingData:
    root = Path(data_dir) if data_dir is not None else mnist.find_data_dir(None)
    if root is None or not (root / FASHION_IMAGES).is_file() or not (root / FASHION_LABELS).is_file():
        raise DataUnavailable(f"Fashion-MNIST images not found: the data directory needs {FASHION_IMAGES} "
                              f"and {FASHION_LABELS}")
    images, labels = mnist.read_idx(root / FASHION_IMAGES), mnist.read_idx(root / FASHION_LABELS).astype(np.int64)
    n = FASHION_TRAIN if limit is None else min(limit, FASHION_TRAIN)
    return TrainingData(
        "Fashion-MNIST", FASHION_CLASSES, _nchw(images[:n]), torch.from_numpy(labels[:n]),
        _nchw(images[FASHION_TRAIN:]), torch.from_numpy(labels[FASHION_TRAIN:]), None, None, MNIST_MEAN, MNIST_STD,
        f"fashion-mnist-test[:{n}] (train images unavailable)",
        f"Fashion-MNIST test images {FASHION_TRAIN}–{len(images) - 1} ({len(images) - FASHION_TRAIN:,} never used "
        "in training)",
    )


def shapes_data(limit: int | None) -> TrainingData:
    sizes = dict(shapes.SPLIT_SIZES)
    if limit is not None:  # a quick run: every split shrinks, and the test_set sentence says so
        sizes = {name: min(size, limit) for name, size in sizes.items()}
    train = shapes.generate_split("train", sizes["train"])
    val = shapes.generate_split("val", sizes["val"])
    test = shapes.generate_split("test", sizes["test"])
    seeds = shapes.SPLIT_SEEDS
    return TrainingData(
        "Shapes (synthetic)", tuple(shapes.CLASSES), _nchw(train.images), torch.from_numpy(train.labels),
        _nchw(test.images), torch.from_numpy(test.labels), _nchw(val.images), torch.from_numpy(val.labels),
        SHAPES_MEAN, SHAPES_STD, f"shapes train split[:{sizes['train']}] (seed {seeds['train']})",
        f"the Shapes test split ({sizes['test']:,} generated images, seed {seeds['test']}; "
        "never used in training or model selection)",
    )


def normalise(batch: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 N×C×H×W → float32 as the registry's preprocessing produces it: (x/255 − mean) / std."""
    return (batch.to(torch.float32) / 255.0 - mean) / std


def affine(batch: torch.Tensor, generator: torch.Generator, kinds: tuple[str, ...]) -> torch.Tensor:
    """Per-sample random affine warp of a float batch in [0, 1] (0 = background outside): rotation ±10°,
    scale 0.9–1.1, shift ±2 px, each only when named in ``kinds`` (its random numbers are drawn anyway,
    so one choice does not change the others' draws); horizontal flips when ``flip`` is named.
    Small enough that every digit keeps its identity."""
    n, _, h, w = batch.shape
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(10)
    scale = 0.9 + 0.2 * torch.rand(n, generator=generator)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2.0 * 2 / torch.tensor([w, h]))
    if "rotate" not in kinds:
        angle = torch.zeros_like(angle)
    if "scale" not in kinds:
        scale = torch.ones_like(scale)
    if "shift" not in kinds:
        shift = torch.zeros_like(shift)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    mirror = torch.ones(n)
    if "flip" in kinds:
        mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.stack([torch.stack([cos * mirror, -sin, shift[:, 0]], 1),
                         torch.stack([sin * mirror, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# Class permutations of the Shapes labels under a flip and under a transposition: a flip mirrors a
# stripe angle a to 180° − a (45° ↔ 135°), a transposition maps it to 90° − a (0° ↔ 90°).
_GRATING = {a: shapes.CLASSES.index(f"grating {a}°") for a in (0, 45, 90, 135)}
_FLIP_LABELS = torch.arange(len(shapes.CLASSES))
_FLIP_LABELS[_GRATING[45]], _FLIP_LABELS[_GRATING[135]] = _GRATING[135], _GRATING[45]
_TRANSPOSE_LABELS = torch.arange(len(shapes.CLASSES))
_TRANSPOSE_LABELS[_GRATING[0]], _TRANSPOSE_LABELS[_GRATING[90]] = _GRATING[90], _GRATING[0]


def dihedral(batch: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a random one of the square's 8 symmetries to each Shapes image, relabelling gratings to match.

    The generator's distribution is itself symmetric (uniform positions, rotations and gradient
    directions), so this only adds views the dataset could have produced.
    """
    ops = torch.randint(0, 8, (len(batch),), generator=generator)
    batch, labels = batch.clone(), labels.clone()
    hflip, vflip, transpose = (ops & 1).bool(), (ops & 2).bool(), (ops & 4).bool()
    batch[hflip] = batch[hflip].flip(-1)
    labels[hflip] = _FLIP_LABELS[labels[hflip]]
    batch[vflip] = batch[vflip].flip(-2)
    labels[vflip] = _FLIP_LABELS[labels[vflip]]
    batch[transpose] = batch[transpose].transpose(-1, -2)
    labels[transpose] = _TRANSPOSE_LABELS[labels[transpose]]
    return batch, labels


def augment(batch: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, kinds: tuple[str, ...],
            dataset: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A float batch in [0, 1] and its labels, augmented as ``kinds`` says for ``dataset``."""
    if not kinds:
        return batch, labels
    if dataset == "shapes":  # flips of Shapes images are the square's symmetries, labels remapped
        return dihedral(batch, labels, generator)
    return affine(batch, generator, kinds), labels


def missing(dataset: str, data_dir: str | Path | None) -> str | None:
    """Why ``dataset`` cannot be loaded from ``data_dir`` (a sentence), or None when its files are there;
    cheap (file names only), so a server can refuse a run before it starts a process."""
    if dataset == "shapes":
        return None
    root = mnist.find_data_dir(data_dir)
    if root is None:
        return "the MNIST test images (mnist/t10k-images-idx3-ubyte.gz) are not in the data directory"
    if dataset == "fashion-mnist" and not ((root / FASHION_IMAGES).is_file() and (root / FASHION_LABELS).is_file()):
        return f"the Fashion-MNIST images ({FASHION_IMAGES}) are not in the data directory {root}"
    return None
