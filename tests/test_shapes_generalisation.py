"""tinyvgg-shapes generalises beyond its own generator: accuracy and the pointing game (Grad-CAM peak inside
the object's box) on the training generator's test split and on an independently written renderer
(``models/datasets/shapes_eval.py``: PIL drawing, square-wave gratings, other backgrounds), never trained on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.datasets import shapes, shapes_eval
from models.registry import get_entry
from server.services.runtime.model_runtime import ModelRuntime
from tests.pointing_game import pointing_game

COUNT = 500
ACCURACY_GOAL = 0.90
POINTING_GOAL = 0.85


def _accuracy(loaded, images: np.ndarray, labels: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    from PIL import Image

    x = torch.stack([loaded.preprocess(Image.fromarray(image)) for image in images])
    with torch.no_grad():
        return float((loaded.module(x).argmax(1).numpy() == labels).mean())


@pytest.mark.slow
def test_shapes_model_holds_up_on_an_independent_renderer(capsys) -> None:
    if not get_entry("tinyvgg-shapes").weights.status().loadable:
        pytest.skip("tinyvgg-shapes has no trained weights here")
    loaded = ModelRuntime(torch.device("cpu")).load("tinyvgg-shapes", "trained")
    own = shapes.generate_split("test", COUNT)
    other = shapes_eval.render(COUNT)
    results = {}
    for name, data in (("own generator", own), ("independent renderer", other)):
        accuracy = _accuracy(loaded, data.images, data.labels)
        score = pointing_game(loaded, data.images, data.labels, data.boxes, method="gradcam")
        results[name] = (accuracy, score.accuracy, score.centre_accuracy)
    with capsys.disabled():
        for name, (accuracy, pointing, centre) in results.items():
            print(f"\ntinyvgg-shapes, {name} ({COUNT} images): accuracy {accuracy:.1%}, Grad-CAM pointing "
                  f"{pointing:.1%} (centre baseline {centre:.1%})")
    accuracy, pointing, centre = results["independent renderer"]
    assert accuracy >= ACCURACY_GOAL
    assert pointing >= POINTING_GOAL and pointing > centre


def test_independent_renderer_is_deterministic_balanced_and_boxed() -> None:
    a, b = shapes_eval.render(30, seed=3), shapes_eval.render(30, seed=3)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.boxes, b.boxes)
    assert not np.array_equal(a.images, shapes_eval.render(30, seed=4).images)
    assert np.bincount(a.labels, minlength=10).tolist() == [3] * 10
    for box in a.boxes:
        x0, y0, x1, y1 = box
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64 and (x1 - x0) >= 8
