"""MNIST from the original idx files (gzip-compressed or not), without torchvision's dataset classes.

Where the files are looked for, in order: an explicit directory, the ``CONVSCOPE_DATA_DIR``
environment variable, then ``<repo root>/../shared/data`` (the workplace's offline data). Inside a
data directory the files may sit in ``mnist/`` (our layout), ``MNIST/raw/`` (torchvision's layout)
or the directory itself. The training images are often missing offline; :func:`load_mnist_train`
then returns ``None`` unless asked to download them through torchvision.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
# Where `download=True` puts torchvision's MNIST copy (git-ignored: /var/ is in .gitignore).
DEFAULT_DOWNLOAD_ROOT = REPO_ROOT / "var" / "data"
ENV_VAR = "CONVSCOPE_DATA_DIR"

TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"

# idx type codes (third byte of the magic number) → big-endian numpy dtypes.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class IdxFormatError(ValueError):
    """The file is not a well-formed idx file (bad magic, or fewer bytes than its header says)."""


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an idx file (``.gz`` decompressed transparently) into an array of its declared shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise IdxFormatError(f"{path.name}: not an idx file (magic bytes {data[:4].hex()})")
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(f"{path.name}: header truncated")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header < expected:
        raise IdxFormatError(f"{path.name}: {len(data) - header} data bytes, header promises {expected}")
    array = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header)
    return array.reshape(shape).astype(dtype.newbyteorder("="), copy=True)


def _layouts(data_dir: Path) -> list[Path]:
    return [data_dir / "mnist", data_dir / "MNIST" / "raw", data_dir]


def _find_file(data_dir: Path, stem: str) -> Path | None:
    for folder in _layouts(data_dir):
        for name in (stem + ".gz", stem):
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None


def find_data_dir(explicit: str | Path | None = None) -> Path | None:
    """The first data directory holding the MNIST test images, or None.

    Candidates in order: ``explicit``, ``$CONVSCOPE_DATA_DIR``, ``<repo root>/../shared/data``. A
    directory counts when it has ``mnist/t10k-images-idx3-ubyte.gz`` (or the same file in
    torchvision's ``MNIST/raw/`` layout).
    """
    candidates: list[Path] = []
    if explicit is not None:
        candidates.append(Path(explicit))
    if os.environ.get(ENV_VAR):
        candidates.append(Path(os.environ[ENV_VAR]))
    candidates.append(DEFAULT_SHARED_DATA)
    for candidate in candidates:
        if any((folder / (TEST_IMAGES + ".gz")).is_file() for folder in _layouts(candidate)[:2]):
            return candidate
    return None


def _load_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path)
    labels = read_idx(labels_path).astype(np.int64)
    if images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1:
        raise IdxFormatError(f"{images_path.name}/{labels_path.name}: unexpected shapes {images.shape}, {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise IdxFormatError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    return images, labels


def load_mnist_test(data_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 MNIST test digits: (uint8 N×28×28, int64 N). FileNotFoundError if absent."""
    data_dir = Path(data_dir)
    images, labels = _find_file(data_dir, TEST_IMAGES), _find_file(data_dir, TEST_LABELS)
    if images is None or labels is None:
        raise FileNotFoundError(f"MNIST test files ({TEST_IMAGES}.gz, {TEST_LABELS}.gz) not found under {data_dir}")
    return _load_pair(images, labels)


def load_mnist_train(
    data_dir: str | Path | None,
    *,
    download: bool = False,
    download_root: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The 60,000 MNIST training digits, or None when their files are not available.

    Looks in ``data_dir`` and in ``download_root`` (default ``<repo>/var/data``). With
    ``download=True`` and no local copy, torchvision downloads them into ``download_root`` (with its
    own md5 checks); this needs the network and is never done implicitly.
    """
    roots = [Path(download_root) if download_root is not None else DEFAULT_DOWNLOAD_ROOT]
    if data_dir is not None:
        roots.insert(0, Path(data_dir))
    for root in roots:
        images, labels = _find_file(root, TRAIN_IMAGES), _find_file(root, TRAIN_LABELS)
        if images is not None and labels is not None:
            return _load_pair(images, labels)
    if not download:
        return None
    import torchvision  # deferred: only the download path needs it

    root = roots[-1]
    root.mkdir(parents=True, exist_ok=True)
    torchvision.datasets.MNIST(str(root), train=True, download=True)
    return _load_pair(root / "MNIST" / "raw" / TRAIN_IMAGES, root / "MNIST" / "raw" / TRAIN_LABELS)
