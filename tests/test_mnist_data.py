"""The MNIST idx reader against the real files in ../shared/data and against files we write ourselves."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from models.datasets import mnist
from tests.harness import SHARED_DATA

HAVE_MNIST = (SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz").is_file()
needs_mnist = pytest.mark.skipif(not HAVE_MNIST, reason="../shared/data/mnist is not present")

# Per-class counts stated in ../shared/data/README.md.
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    """Write an idx file (the format: 0, 0, type code, ndim, big-endian dims, big-endian data)."""
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


@needs_mnist
def test_test_set_shape_labels_and_counts():
    images, labels = mnist.load_mnist_test(SHARED_DATA)
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10_000,) and labels.dtype == np.int64
    assert np.bincount(labels, minlength=10).tolist() == TEST_COUNTS
    assert images.mean() == pytest.approx(33.79, abs=0.01)  # README: "mean pixel 33.79"
    # Digits are light on dark: the border is background.
    assert images[:, 0, :].max() == 0 and images[:, :, 0].mean() < 1.0


@needs_mnist
def test_train_labels_parse_with_readme_counts():
    labels = mnist.read_idx(SHARED_DATA / "mnist" / "train-labels-idx1-ubyte.gz")
    assert labels.shape == (60_000,)
    assert np.bincount(labels, minlength=10).tolist() == TRAIN_COUNTS


@needs_mnist
def test_find_data_dir_default_and_explicit(monkeypatch, tmp_path):
    monkeypatch.delenv(mnist.ENV_VAR, raising=False)
    assert mnist.find_data_dir().resolve() == SHARED_DATA.resolve()
    assert mnist.find_data_dir(SHARED_DATA).resolve() == SHARED_DATA.resolve()
    # A directory without the files is passed over in favour of the next candidate.
    assert mnist.find_data_dir(tmp_path).resolve() == SHARED_DATA.resolve()


@needs_mnist
def test_train_images_absent_gives_none_without_download(tmp_path):
    assert not (SHARED_DATA / "mnist" / "train-images-idx3-ubyte.gz").exists()
    assert mnist.load_mnist_train(SHARED_DATA, download_root=tmp_path) is None


def test_own_layouts_round_trip_and_win_in_order(monkeypatch, tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7).astype(np.uint8)
    ours = tmp_path / "ours"
    write_idx(ours / "mnist" / "t10k-images-idx3-ubyte.gz", images)
    write_idx(ours / "mnist" / "t10k-labels-idx1-ubyte.gz", labels)
    tv = tmp_path / "tv"  # torchvision's layout, uncompressed train files
    write_idx(tv / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz", images[::-1].copy())
    write_idx(tv / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz", labels[::-1].copy())
    write_idx(tv / "MNIST" / "raw" / "train-images-idx3-ubyte", images, compress=False)
    write_idx(tv / "MNIST" / "raw" / "train-labels-idx1-ubyte", labels, compress=False)

    monkeypatch.setenv(mnist.ENV_VAR, str(tv))
    assert mnist.find_data_dir(ours) == ours  # explicit first
    assert mnist.find_data_dir() == tv  # then the environment variable
    assert mnist.find_data_dir(tmp_path / "empty") == tv

    got_images, got_labels = mnist.load_mnist_test(ours)
    assert np.array_equal(got_images, images) and got_labels.dtype == np.int64
    assert np.array_equal(got_labels, labels)
    train = mnist.load_mnist_train(tv, download_root=tmp_path / "none")
    assert train is not None and np.array_equal(train[0], images) and np.array_equal(train[1], labels)
    assert mnist.load_mnist_train(ours, download_root=tmp_path / "none") is None


def test_wider_types_and_corrupt_files(tmp_path):
    values = (np.arange(6).reshape(2, 3) - 2).astype(">i4")
    write_idx(tmp_path / "ints.idx", values, compress=False)
    parsed = mnist.read_idx(tmp_path / "ints.idx")
    assert parsed.shape == (2, 3) and parsed.tolist() == values.tolist()

    good = np.zeros((4, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "good.gz", good)
    truncated = gzip.decompress((tmp_path / "good.gz").read_bytes())[:-10]
    (tmp_path / "short.gz").write_bytes(gzip.compress(truncated))
    with pytest.raises(mnist.IdxFormatError):
        mnist.read_idx(tmp_path / "short.gz")
    (tmp_path / "text").write_bytes(b"not an idx file at all")
    with pytest.raises(mnist.IdxFormatError):
        mnist.read_idx(tmp_path / "text")
    with pytest.raises(FileNotFoundError):
        mnist.load_mnist_test(tmp_path)
