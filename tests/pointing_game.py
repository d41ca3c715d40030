"""The pointing game (Zhang et al. 2016): does a saliency map's peak fall on the object?

For each image with a known bounding box, the map of the image's true class is computed and its maximum
located; a hit is a peak inside the box (``x0 ≤ col < x1`` and ``y0 ≤ row < y1``, no tolerance margin).
The centre-of-image baseline "points" at the middle pixel of every image, which is what a method that
knows nothing would score on data whose objects cluster near the middle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from server.services.runtime.model_runtime import LoadedModel
from server.services.saliency.methods import get_method


@dataclass(frozen=True)
class PointingScore:
    hits: int
    centre_hits: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.hits / self.total if self.total else 0.0

    @property
    def centre_accuracy(self) -> float:
        return self.centre_hits / self.total if self.total else 0.0


def inside(box: np.ndarray, row: int, col: int) -> bool:
    x0, y0, x1, y1 = (int(v) for v in box)
    return x0 <= col < x1 and y0 <= row < y1


def peak(values: torch.Tensor) -> tuple[int, int]:
    """(row, col) of the map's maximum (the first one, in row-major order, on ties)."""
    flat = int(torch.argmax(values))
    return flat // values.shape[1], flat % values.shape[1]


def pointing_game(
    loaded: LoadedModel,
    images: np.ndarray,
    labels: np.ndarray,
    boxes: np.ndarray,
    method: str = "gradcam",
    layer: str | None = None,
) -> PointingScore:
    """Score ``method`` on uint8 N×H×W×3 ``images`` with their class ``labels`` and ``boxes``.

    Each image goes through the model's own preprocessing; boxes are in the preprocessed image's pixels,
    so the images must already be at the model's input size (as the Shapes images are for TinyVGG).
    """
    saliency = get_method(method)
    layer_name = (layer or loaded.entry.target_layer) if saliency.uses_layer else None
    hits = centre_hits = 0
    for image, label, box in zip(images, labels, boxes):
        x = loaded.preprocess(Image.fromarray(image)).unsqueeze(0).to(loaded.device)
        values = saliency.explain(loaded, x, layer_name, [int(label)]).maps[0].values
        if tuple(values.shape) != image.shape[:2]:
            raise ValueError(f"map {tuple(values.shape)} and image {image.shape[:2]} differ: boxes would not line up")
        row, col = peak(values)
        hits += inside(box, row, col)
        centre_hits += inside(box, values.shape[0] // 2, values.shape[1] // 2)
    return PointingScore(hits, centre_hits, len(labels))
