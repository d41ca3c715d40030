"""Training: a quick smoke run, determinism, augmentation labels, and the committed weights' metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models import registry
from models.datasets import mnist, shapes
from models.preprocessing import SHAPES_MEAN, SHAPES_STD
from models.training import train as training
from models.training import train_model
from tests.harness import SHARED_DATA

HAVE_MNIST = (SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz").is_file()
needs_mnist = pytest.mark.skipif(not HAVE_MNIST, reason="../shared/data/mnist is not present")

BUNDLED = ("lenet5", "mnist-shallow", "mnist-deep", "tinyvgg-shapes")
MNIST_IDS = ("lenet5", "mnist-shallow", "mnist-deep")
REQUIRED_METRICS = {
    "model", "dataset", "train_source", "test_set", "test_accuracy", "test_loss", "train_accuracy", "epochs",
    "seed", "batch_size", "optimizer", "learning_rate", "num_params", "duration_s", "date", "torch_version",
}


GRATING_ANGLES = {shapes.CLASSES.index(f"grating {a}°"): a for a in (0, 45, 90, 135)}


def stripe_gradient_angle(diff: np.ndarray) -> float:
    """Dominant gradient direction (degrees mod 180, x right / rows down) of an H×W×C image."""
    jxx = jyy = jxy = 0.0
    for channel in np.moveaxis(diff.astype(np.float64), -1, 0):
        gy, gx = np.gradient(channel)
        jxx, jyy, jxy = jxx + (gx * gx).sum(), jyy + (gy * gy).sum(), jxy + (gx * gy).sum()
    return float(np.degrees(0.5 * np.arctan2(2 * jxy, jxx - jyy)) % 180.0)


def angle_gap(a: float, b: float) -> float:
    d = abs(a - b) % 180.0
    return min(d, 180.0 - d)


def load_metrics(directory: Path, model_id: str) -> dict:
    return json.loads((directory / f"{model_id}.metrics.json").read_text())


def assert_loadable(directory: Path, model_id: str) -> torch.nn.Module:
    state = torch.load(directory / f"{model_id}.pt", map_location="cpu", weights_only=True)
    model = registry.get_entry(model_id).build_untrained()
    expected = model.state_dict()
    assert set(state) == set(expected)
    assert all(state[k].shape == expected[k].shape for k in state)
    model.load_state_dict(state)
    return model.eval()


@needs_mnist
def test_smoke_run_writes_loadable_weights_and_metrics(tmp_path):
    metrics = train_model("mnist-shallow", data_dir=SHARED_DATA, out_dir=tmp_path, epochs=3, limit=500, progress=False)
    assert REQUIRED_METRICS <= set(metrics)
    assert load_metrics(tmp_path, "mnist-shallow") == json.loads(json.dumps(metrics))
    assert metrics["train_source"] == "mnist-test[:500] (train images unavailable)"
    assert metrics["train_size"] == 500 and metrics["test_size"] == 2000 and metrics["epochs"] == 3
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["test_correct"] == round(metrics["test_accuracy"] * 2000)
    assert metrics["test_accuracy"] > 0.5  # 500 digits, three short epochs (~0.75): far above chance (0.1)
    model = assert_loadable(tmp_path, "mnist-shallow")
    assert metrics["num_params"] == sum(p.numel() for p in model.parameters())


@needs_mnist
def test_training_is_deterministic_given_the_seed(tmp_path):
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        train_model("lenet5", data_dir=SHARED_DATA, out_dir=tmp_path / name, epochs=1, limit=200, seed=seed, progress=False)
        runs[name] = torch.load(tmp_path / name / "lenet5.pt", weights_only=True)
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not all(torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


def test_shapes_smoke_run_selects_on_val_and_tests_apart(tmp_path):
    metrics = train_model("tinyvgg-shapes", out_dir=tmp_path, epochs=1, limit=256, progress=False)
    assert REQUIRED_METRICS <= set(metrics)
    assert metrics["test_size"] == 256 and "val_accuracy" in metrics
    assert metrics["selection"] == "best validation accuracy"
    assert str(shapes.SPLIT_SEEDS["test"]) in metrics["test_set"]
    assert_loadable(tmp_path, "tinyvgg-shapes")


def test_unknown_model_and_bad_epochs_are_refused(tmp_path):
    with pytest.raises(KeyError):
        train_model("resnet18", out_dir=tmp_path)
    with pytest.raises(ValueError):
        train_model("tinyvgg-shapes", out_dir=tmp_path, epochs=0)


def test_dihedral_augmentation_relabels_gratings_to_their_new_angle():
    seed = 31
    batch = shapes.generate(60, seed)
    background = shapes.generate(60, seed, objects=False)
    gratings = np.array([label in GRATING_ANGLES for label in batch.labels])
    diff = torch.from_numpy(batch.images[gratings].astype(np.float32) - background.images[gratings]).permute(0, 3, 1, 2)
    labels = torch.from_numpy(batch.labels[gratings])
    for draw in range(3):  # several draws so that every one of the 8 symmetries occurs
        moved, new_labels = training._dihedral(diff, labels, torch.Generator().manual_seed(draw))
        for image, label in zip(moved, new_labels):
            angle = GRATING_ANGLES[int(label)]
            measured = stripe_gradient_angle(image.permute(1, 2, 0).numpy())
            assert angle_gap(measured, 90.0 - angle) < 12.0, (draw, angle, measured)
    shape_labels = torch.arange(6)
    assert torch.equal(training._dihedral(torch.zeros(6, 3, 8, 8), shape_labels, torch.Generator())[1], shape_labels)


# --- the committed weights -------------------------------------------------------------------------


@pytest.mark.parametrize("model_id", BUNDLED)
def test_committed_weights_are_small_loadable_and_described(model_id):
    path = registry.WEIGHTS_DIR / f"{model_id}.pt"
    assert path.stat().st_size < 2_000_000
    model = assert_loadable(registry.WEIGHTS_DIR, model_id)
    metrics = load_metrics(registry.WEIGHTS_DIR, model_id)
    assert REQUIRED_METRICS <= set(metrics) and metrics["model"] == model_id
    assert metrics["num_params"] == sum(p.numel() for p in model.parameters())
    status = registry.get_entry(model_id).weights.status()
    assert status.state == "bundled" and f"{metrics['test_accuracy'] * 100:.2f}%" in status.detail
    if model_id == "lenet5":
        assert "0.95%" in metrics["reference"]


@needs_mnist
@pytest.mark.parametrize("model_id", MNIST_IDS)
def test_committed_mnist_weights_reproduce_their_test_accuracy(model_id):
    """Run the registry's own preprocessing on the raw digits, as the server does, and recount."""
    metrics = load_metrics(registry.WEIGHTS_DIR, model_id)
    images, labels = mnist.load_mnist_test(SHARED_DATA)
    held_out = metrics["test_size"]
    if metrics["train_source"].startswith("mnist-test"):
        images, labels = images[-held_out:], labels[-held_out:]  # digits 8000–9999, never trained on
    assert len(images) == held_out
    entry = registry.get_entry(model_id)
    preprocess = entry.make_preprocess()
    batch = torch.stack([preprocess(Image.fromarray(digit)) for digit in images])
    model = entry.build(trained=True)
    with torch.no_grad():
        predicted = torch.cat([model(chunk).argmax(1) for chunk in batch.split(500)])
    correct = int((predicted == torch.from_numpy(labels)).sum())
    # The same images and weights: the count matches; one image of slack for float rounding on a
    # different CPU flipping a near-tie.
    assert abs(correct - metrics["test_correct"]) <= 1, (correct, metrics["test_correct"])
    assert correct / held_out == pytest.approx(metrics["test_accuracy"], abs=1.0 / held_out)


def test_committed_shapes_weights_reproduce_their_test_accuracy():
    """The full test split, normalised as rgb_square does (checked on a few through the real pipeline)."""
    metrics = load_metrics(registry.WEIGHTS_DIR, "tinyvgg-shapes")
    # The generator's distribution is wide on purpose (tiny to large, outlines, blotches, speckle, low contrast):
    # its own test split is the hard part; test_shapes_generalisation.py holds the independent renderer.
    assert metrics["test_accuracy"] >= 0.92
    test = shapes.generate_split("test", metrics["test_size"])
    entry = registry.get_entry("tinyvgg-shapes")
    preprocess = entry.make_preprocess()
    x = (torch.from_numpy(test.images).permute(0, 3, 1, 2).float() / 255.0 - SHAPES_MEAN) / SHAPES_STD
    for i in (0, 1, 7):
        assert torch.allclose(preprocess(Image.fromarray(test.images[i])), x[i], atol=1e-6)
    model = entry.build(trained=True)
    with torch.no_grad():
        predicted = torch.cat([model(chunk).argmax(1) for chunk in x.split(500)])
    correct = int((predicted == torch.from_numpy(test.labels)).sum())
    assert abs(correct - metrics["test_correct"]) <= 1, (correct, metrics["test_correct"])
