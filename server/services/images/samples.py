"""Sample images for the page's gallery: Shapes test images and, when the data is on disk, MNIST test digits
and photos (for the ImageNet models).

Sample ids name where a picture comes from (``shapes-test-3``, ``mnist-test-42``), so one id always
gives the same bytes: the page fetches a sample's PNG and uploads it like any other image, and the
content-addressed image store makes that cheap.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from models.datasets import mnist, shapes
from server.services.runtime.cache import ResultCache

DATASETS = ("shapes", "mnist", "photos")
DEFAULT_COUNT = 12
MAX_COUNT = 64
# Labels of this many leading Shapes test samples are scanned to pick a class-balanced gallery.
_SHAPES_SCAN = 400

_SAMPLE_ID = re.compile(r"(shapes|mnist)-test-(0|[1-9][0-9]{0,5})")
_PHOTO_ID = re.compile(r"photos-([a-z0-9][a-z0-9_-]{0,39})")
_PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
PHOTO_MAX_SIDE = 512  # plenty for 224×224 models, and a light download for a class of laptops

SampleCache = ResultCache[object]  # sample PNGs, the MNIST arrays and the Shapes labels


def _cache(cache: SampleCache | None) -> SampleCache:
    """The gallery's cache, or (a call outside the app: tests, the CLI) one for this call only."""
    return cache if cache is not None else ResultCache("samples (one call)", 64 * 1024 * 1024)


class SampleGallery:
    """The samples the app serves, with one ResultCache whose budget is ``Settings.sample_cache_bytes``
    (made and owned by the wiring, not a module global)."""

    def __init__(self, cache_bytes: int, data_dir: Path | None = None) -> None:
        self.cache: SampleCache = ResultCache("samples", cache_bytes)
        self.data_dir = data_dir

    def list(self, dataset: str, count: int = DEFAULT_COUNT) -> list[Sample]:
        return list_samples(dataset, count, self.data_dir, self.cache)

    def png(self, sample_id: str) -> bytes:
        return sample_png(sample_id, self.data_dir, self.cache)


class UnknownSample(LookupError):
    """The sample id names no sample this server can produce; the message is a sentence for a person."""


@dataclass(frozen=True)
class Sample:
    id: str
    dataset: str
    label: str
    url: str


def _make(dataset: str, index: int, label: str) -> Sample:
    sample_id = f"{dataset}-test-{index}"
    return Sample(sample_id, dataset, label, f"/api/samples/{sample_id}.png")


def list_samples(dataset: str, count: int = DEFAULT_COUNT, data_dir: Path | None = None,
                 cache: SampleCache | None = None) -> list[Sample]:
    """Up to ``count`` test samples of ``dataset`` whose labels cycle through the classes (0, 1, 2, …).

    ``data_dir`` is where to look for MNIST first; MNIST gives an empty list when no MNIST test
    files can be found.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    count = max(0, min(int(count), MAX_COUNT))
    cache = _cache(cache)
    if dataset == "shapes":
        labels = _shapes_test_labels(cache)
        return [_make("shapes", i, shapes.CLASSES[int(labels[i])]) for i in _balanced_indices(labels, count)]
    if dataset == "photos":
        photos = _photo_files(_photos_dir(data_dir))
        return [Sample(f"photos-{stem}", "photos", stem, f"/api/samples/photos-{stem}.png")
                for stem in sorted(photos)[:count]]
    arrays = _mnist_arrays(mnist.find_data_dir(data_dir), cache)
    if arrays is None:
        return []
    _, labels = arrays
    return [_make("mnist", i, str(int(labels[i]))) for i in _balanced_indices(labels, count)]


def sample_png(sample_id: str, data_dir: Path | None = None, cache: SampleCache | None = None) -> bytes:
    """The PNG bytes of one sample; :class:`UnknownSample` for an id that names none."""
    cache = _cache(cache)
    photo = _PHOTO_ID.fullmatch(sample_id)
    if photo is not None:
        path = _photo_files(_photos_dir(data_dir)).get(photo.group(1))
        if path is None:
            raise UnknownSample(f"This server has no photo {photo.group(1)!r}.")
        return _photo_png(path, cache)
    match = _SAMPLE_ID.fullmatch(sample_id)
    if match is None:
        raise UnknownSample(f"{sample_id!r} is not a sample id; ids look like 'shapes-test-3' or 'mnist-test-42'.")
    dataset, index = match.group(1), int(match.group(2))
    if dataset == "shapes":
        size = shapes.SPLIT_SIZES["test"]
        if index >= size:
            raise UnknownSample(f"There is no Shapes test sample {index}; indices run from 0 to {size - 1}.")
        return _shapes_png(index, cache)
    arrays = _mnist_arrays(mnist.find_data_dir(data_dir), cache)
    if arrays is None:
        raise UnknownSample("This server has no MNIST test images, so it has no MNIST samples.")
    images, _ = arrays
    if index >= len(images):
        raise UnknownSample(f"There is no MNIST test sample {index}; indices run from 0 to {len(images) - 1}.")
    # MNIST's own convention, 28×28 grey with a light digit on black: exactly what the models saw.
    return _png(Image.fromarray(np.ascontiguousarray(images[index]), mode="L"))


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _photos_dir(data_dir: Path | None) -> Path | None:
    """``images/`` beside the MNIST files (the offline data folder), when there is one."""
    root = data_dir if data_dir is not None and (data_dir / "images").is_dir() else mnist.find_data_dir(data_dir)
    return root / "images" if root is not None and (root / "images").is_dir() else None


def _photo_files(folder: Path | None) -> dict[str, Path]:
    """Photos by lower-case stem. Only names listed here can be served: ids never become paths."""
    if folder is None:
        return {}
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        stem = path.stem.lower()
        if path.suffix.lower() in _PHOTO_SUFFIXES and path.is_file() and _PHOTO_ID.fullmatch(f"photos-{stem}"):
            found.setdefault(stem, path)
    return found


def _photo_png(path: Path, cache: SampleCache) -> bytes:
    return cache.get_or_compute(("photo", path), lambda: _read_photo(path))  # type: ignore[return-value]


def _read_photo(path: Path) -> bytes:
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    rgb.thumbnail((PHOTO_MAX_SIDE, PHOTO_MAX_SIDE), Image.LANCZOS)
    return _png(rgb)


def _shapes_png(index: int, cache: SampleCache) -> bytes:
    def make() -> bytes:
        image, _, _ = shapes.sample(index, split="test")
        return _png(image.convert("RGB"))

    return cache.get_or_compute(("shapes", index), make)  # type: ignore[return-value]


def _shapes_test_labels(cache: SampleCache) -> np.ndarray:
    return cache.get_or_compute(  # type: ignore[return-value]
        ("shapes-labels",), lambda: shapes.generate_split("test", count=_SHAPES_SCAN).labels)


def _balanced_indices(labels: np.ndarray, count: int) -> list[int]:
    """The first indices of each class, interleaved class by class (0, 1, …, 0, 1, …), ``count`` in all."""
    classes = sorted(int(c) for c in np.unique(labels))
    per_class = -(-count // max(1, len(classes)))
    by_class = [np.flatnonzero(labels == c)[:per_class] for c in classes]
    out: list[int] = []
    for rank in range(per_class):
        out.extend(int(indices[rank]) for indices in by_class if rank < len(indices))
    return out[:count]


def _mnist_arrays(data_dir: Path | None, cache: SampleCache) -> tuple[np.ndarray, np.ndarray] | None:
    """10,000 × 28 × 28 bytes ≈ 7.8 MB per directory."""
    if data_dir is None:
        return None
    return cache.get_or_compute(("mnist", data_dir), lambda: _load_mnist(data_dir))  # type: ignore[return-value]


def _load_mnist(data_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        images, labels = mnist.load_mnist_test(data_dir)
    except (OSError, ValueError):  # missing or malformed files: the gallery just has no digits
        return None
    return images, labels
