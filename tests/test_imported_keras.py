"""Keras 3 models in the models file: the course's two MNIST nets (the ones mnist-shallow and mnist-deep mirror),
built and briefly trained in Keras, saved as .keras, loaded through the models file: ConvScope's predictions
equal Keras's own within 1e-4; the conversion is cached by the file's sha256; without Keras the entry is
unavailable with the install command."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from models.datasets.mnist import load_mnist_test
from tests.imported_support import keras_module, load_entry

os.environ.setdefault("KERAS_BACKEND", "torch")  # ConvScope converts on Keras's torch backend
pytest.importorskip("keras")
TOLERANCE = 1e-4


def _course_net(deep: bool):  # noqa: ANN202 - a keras.Sequential
    """The notebooks' nets, as models/architectures.py mirrors them: 5×5 'same' convolutions with ReLU (10
    filters stride 2; the deep one adds 40 stride 2 and 80 stride 1), then Dense 50 ReLU and Dense 10 softmax."""
    keras = keras_module()
    layers = [keras.Input((28, 28, 1)), keras.layers.Conv2D(10, 5, strides=2, padding="same", activation="relu")]
    if deep:
        layers += [keras.layers.Conv2D(40, 5, strides=2, padding="same", activation="relu"),
                   keras.layers.Conv2D(80, 5, strides=1, padding="same", activation="relu")]
    layers += [keras.layers.Flatten(), keras.layers.Dense(50, activation="relu"),
               keras.layers.Dense(10, activation="softmax")]
    return keras.Sequential(layers)


@pytest.fixture(scope="module")
def mnist(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = load_mnist_test(shared_data / "mnist")  # the train images are not in the offline data
    return (images[:2400].astype(np.float32) / 255.0)[..., None], labels[:2400]


@pytest.mark.parametrize("deep", [False, True], ids=["mnist-shallow", "mnist-deep"])
def test_course_nets_match_keras(deep: bool, mnist: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    keras = keras_module()
    keras.utils.set_random_seed(0)
    images, labels = mnist
    net = _course_net(deep)
    net.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    net.fit(images[:2000], labels[:2000], epochs=2, batch_size=64, verbose=0)
    net.save(tmp_path / "net.keras")
    held_out = images[2000:]
    expected = net.predict(held_out, verbose=0)
    accuracy = float((expected.argmax(1) == labels[2000:]).mean())
    assert accuracy > 0.7, accuracy  # trained, however briefly: the comparison is on a working classifier

    entry = load_entry(tmp_path, "keras", "net.keras", extra='labels = ["0","1","2","3","4","5","6","7","8","9"]')
    assert entry.weights.status().state == "local", entry.weights.status().detail
    assert (entry.input.channels, entry.input.height, entry.input.width) == (1, 28, 28)
    module = entry.build(trained=True)
    convs = [name for name, m in module.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == (3 if deep else 1)
    assert all(module.get_submodule(name).bias is not None for name in convs)  # Keras's bias is in the Conv
    with torch.no_grad():
        ours = torch.softmax(module(torch.from_numpy(held_out).permute(0, 3, 1, 2)), dim=1).numpy()
    difference = float(np.abs(ours - expected).max())
    print(f"{'mnist-deep' if deep else 'mnist-shallow'} in Keras: accuracy {accuracy:.3f} on 400 held-out digits, "
          f"max |ConvScope - Keras| = {difference:.2e}")
    assert difference < TOLERANCE

    # Converted once: the normalised graph is cached by the file's sha256 and used again as it is.
    (cached,) = (tmp_path / "import-cache").glob("*.onnx")
    assert cached.stem == entry.meta["sha256"]
    stamp = cached.stat().st_mtime_ns
    again = load_entry(tmp_path, "keras", "net.keras", model_id="again")
    assert cached.stat().st_mtime_ns == stamp
    with torch.no_grad():
        assert torch.equal(again.build(trained=True)(torch.zeros(1, 1, 28, 28)), module(torch.zeros(1, 1, 28, 28)))


def test_keras_missing_means_unavailable_with_the_install_command(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "net.keras").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    monkeypatch.setitem(sys.modules, "keras", None)  # `import keras` now raises ImportError, as when absent
    status = load_entry(tmp_path, "keras", "net.keras").weights.status()
    assert status.state == "unavailable"
    assert 'pip install "convscope[keras]"' in status.detail
