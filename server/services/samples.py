"""Sample images for the page's gallery: Shapes test images and, when the data is on disk, MNIST test digits.

Sample ids name where a picture comes from (``shapes-test-3``, ``mnist-test-42``), so one id always
gives the same bytes: the page fetches a sample's PNG and uploads it like any other image, and the
content-addressed image store makes that cheap.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

DATASETS = ("shapes", "mnist")
DEFAULT_COUNT = 12
MAX_COUNT = 64
# Shapes are generated from their index, so any index is a picture; the bound keeps ids (and the
# work one request can ask for) small.
SHAPES_TEST_SIZE = 10_000

_SAMPLE_ID = re.compile(r"(shapes|mnist)-test-(0|[1-9][0-9]{0,5})")


class UnknownSample(LookupError):
    """The sample id names no sample this server can produce; the message is a sentence for a person."""


@dataclass(frozen=True)
class Sample:
    id: str
    dataset: str
    label: str
    url: str


def sample_url(sample_id: str) -> str:
    return f"/api/samples/{sample_id}.png"


def list_samples(dataset: str, count: int = DEFAULT_COUNT, data_dir: Path | None = None) -> list[Sample]:
    """Up to ``count`` samples of ``dataset`` whose labels cycle through the classes (0, 1, 2, …).

    MNIST gives an empty list when no MNIST test files can be found.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}")
    count = max(0, min(int(count), MAX_COUNT))
    if dataset == "shapes":
        return [_shapes_sample(i) for i in _shapes_indices(count)]
    arrays = _mnist_arrays(_mnist_dir(data_dir))
    if arrays is None:
        return []
    _, labels = arrays
    return [Sample(f"mnist-test-{i}", "mnist", str(int(labels[i])), sample_url(f"mnist-test-{i}"))
            for i in _balanced_indices(labels, count)]


def sample_png(sample_id: str, data_dir: Path | None = None) -> bytes:
    """The PNG bytes of one sample; :class:`UnknownSample` for an id that names none."""
    dataset, index = _parse_id(sample_id)
    if dataset == "shapes":
        if index >= SHAPES_TEST_SIZE:
            raise UnknownSample(f"There is no Shapes test sample {index}; indices run from 0 to {SHAPES_TEST_SIZE - 1}.")
        return _shapes_png(index)
    arrays = _mnist_arrays(_mnist_dir(data_dir))
    if arrays is None:
        raise UnknownSample("This server has no MNIST test images, so it has no MNIST samples.")
    images, _ = arrays
    if index >= len(images):
        raise UnknownSample(f"There is no MNIST test sample {index}; indices run from 0 to {len(images) - 1}.")
    return _png(Image.fromarray(np.ascontiguousarray(images[index]), mode="L"))


def _parse_id(sample_id: str) -> tuple[str, int]:
    match = _SAMPLE_ID.fullmatch(sample_id)
    if match is None:
        raise UnknownSample(f"{sample_id!r} is not a sample id; ids look like 'shapes-test-3' or 'mnist-test-42'.")
    return match.group(1), int(match.group(2))


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


@lru_cache(maxsize=256)  # 64×64 PNGs of a few KB each: a bounded few hundred KB
def _shapes_png(index: int) -> bytes:
    from models.datasets import shapes

    image, _, _ = shapes.sample(index, split="test")
    return _png(image.convert("RGB"))


@lru_cache(maxsize=4096)  # ints only: the labels of the prefix the gallery scans
def _shapes_label(index: int) -> int:
    from models.datasets import shapes

    _, label_index, _ = shapes.sample(index, split="test")
    return int(label_index)


def _shapes_sample(index: int) -> Sample:
    from models.datasets import shapes

    sample_id = f"shapes-test-{index}"
    return Sample(sample_id, "shapes", shapes.CLASSES[_shapes_label(index)], sample_url(sample_id))


@lru_cache(maxsize=8)
def _shapes_indices(count: int) -> tuple[int, ...]:
    """The first test indices whose labels cycle through the classes, so a gallery shows every class."""
    from models.datasets import shapes

    num_classes = len(shapes.CLASSES)
    by_class: dict[int, list[int]] = {c: [] for c in range(num_classes)}
    per_class = -(-count // num_classes)
    index = 0
    # Scan a bounded prefix: generation is cheap (64×64), and a skewed generator still ends the loop.
    while index < min(SHAPES_TEST_SIZE, 20 * count + 100) and any(len(v) < per_class for v in by_class.values()):
        label = _shapes_label(index)
        if len(by_class[label]) < per_class:
            by_class[label].append(index)
        index += 1
    return _interleave(by_class, count)


def _balanced_indices(labels: np.ndarray, count: int) -> tuple[int, ...]:
    by_class: dict[int, list[int]] = {}
    per_class = -(-count // max(1, len(np.unique(labels))))
    for cls in sorted(int(c) for c in np.unique(labels)):
        by_class[cls] = [int(i) for i in np.flatnonzero(labels == cls)[:per_class]]
    return _interleave(by_class, count)


def _interleave(by_class: dict[int, list[int]], count: int) -> tuple[int, ...]:
    out: list[int] = []
    rank = 0
    while len(out) < count and any(rank < len(v) for v in by_class.values()):
        out.extend(v[rank] for _, v in sorted(by_class.items()) if rank < len(v))
        rank += 1
    return tuple(out[:count])


def _mnist_dir(data_dir: Path | None) -> Path | None:
    if data_dir is not None:
        return data_dir
    from models.datasets import mnist

    return mnist.find_data_dir()


@lru_cache(maxsize=2)  # 10,000 × 28 × 28 bytes ≈ 7.8 MB per directory; two directories at most
def _mnist_arrays(data_dir: Path | None) -> tuple[np.ndarray, np.ndarray] | None:
    if data_dir is None:
        return None
    from models.datasets import mnist

    try:
        images, labels = mnist.load_mnist_test(data_dir)
    except (OSError, ValueError):
        return None
    return np.asarray(images, dtype=np.uint8), np.asarray(labels)
