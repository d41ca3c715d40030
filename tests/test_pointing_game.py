"""The pointing game on tinyvgg-shapes: the Grad-CAM peak falls inside the object's box in ≥ 90 % of 500
Shapes test images (with the centre-of-image baseline reported beside it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.datasets import shapes
from models.registry import get_entry
from server.services.runtime.model_runtime import ModelRuntime
from tests.pointing_game import inside, peak, pointing_game

IMAGES = 500
GOAL = 0.90


def test_peak_and_box_geometry() -> None:
    values = torch.zeros(8, 8)
    values[2, 5] = 1.0
    assert peak(values) == (2, 5)
    box = np.array([5, 2, 6, 3])  # x0, y0, x1, y1 exclusive: exactly the pixel (row 2, col 5)
    assert inside(box, 2, 5)
    assert not inside(box, 2, 6) and not inside(box, 3, 5) and not inside(box, 1, 5)


@pytest.mark.slow
def test_gradcam_points_at_the_object_on_shapes(capsys) -> None:
    status = get_entry("tinyvgg-shapes").weights.status()
    if not status.loadable:
        pytest.skip(f"tinyvgg-shapes has no trained weights here: {status.detail}")
    runtime = ModelRuntime(torch.device("cpu"))
    loaded = runtime.load("tinyvgg-shapes", "trained")
    data = shapes.generate_split("test", IMAGES)
    score = pointing_game(loaded, data.images, data.labels, data.boxes, method="gradcam")
    with capsys.disabled():
        print(
            f"\npointing game, tinyvgg-shapes, Grad-CAM at {loaded.entry.target_layer}, {score.total} test images: "
            f"{score.accuracy:.1%} (centre-of-image baseline {score.centre_accuracy:.1%})"
        )
    assert score.total == IMAGES
    assert score.accuracy >= GOAL
    assert score.accuracy > score.centre_accuracy
