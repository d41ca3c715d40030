"""The Shapes generator: determinism, split separation, tight boxes, classes, grating orientation."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from models.datasets import shapes

GRATING_ANGLES = {shapes.CLASSES.index(f"grating {a}°"): a for a in (0, 45, 90, 135)}


def stripe_gradient_angle(diff: np.ndarray) -> float:
    """Dominant gradient direction (degrees mod 180, x right / rows down) from the structure tensor."""
    jxx = jyy = jxy = 0.0
    for channel in np.moveaxis(diff.astype(np.float64), -1, 0):  # tensors add; gradient signs cancel out
        gy, gx = np.gradient(channel)
        jxx, jyy, jxy = jxx + (gx * gx).sum(), jyy + (gy * gy).sum(), jxy + (gx * gy).sum()
    return float(np.degrees(0.5 * np.arctan2(2 * jxy, jxx - jyy)) % 180.0)


def angle_gap(a: float, b: float) -> float:
    d = abs(a - b) % 180.0
    return min(d, 180.0 - d)


def test_classes_are_the_registry_contract():
    assert shapes.CLASSES == (
        "circle",
        "square",
        "triangle",
        "star",
        "cross",
        "ring",
        "grating 0°",
        "grating 45°",
        "grating 90°",
        "grating 135°",
    )


def test_same_seed_gives_same_bytes_and_other_seed_differs():
    a, b = shapes.generate(300, 7), shapes.generate(300, 7)
    assert a.images.dtype == np.uint8 and a.images.shape == (300, 64, 64, 3)
    assert a.labels.dtype == np.int64 and a.labels.shape == (300,)
    assert a.boxes.shape == (300, 4)
    assert a.images.tobytes() == b.images.tobytes()
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.boxes, b.boxes)
    c = shapes.generate(300, 8)
    assert not np.array_equal(a.images, c.images)


def test_sample_and_offsets_equal_the_batch():
    seed = shapes.SPLIT_SEEDS["test"]
    batch = shapes.generate(40, seed)
    tail = shapes.generate(10, seed, start=30)
    assert np.array_equal(batch.images[30:], tail.images)
    for index in (0, 13, 39):
        image, label, box = shapes.sample(index, "test")
        assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (64, 64)
        assert np.array_equal(np.asarray(image), batch.images[index])
        assert label == int(batch.labels[index]) and isinstance(label, int)
        assert box == tuple(int(v) for v in batch.boxes[index])
        assert all(isinstance(v, int) for v in box)


def test_splits_use_distinct_seeds_and_never_share_an_image():
    assert len(set(shapes.SPLIT_SEEDS.values())) == 3
    digests = {}
    for split in ("train", "val", "test"):
        batch = shapes.generate(200, shapes.SPLIT_SEEDS[split])
        digests[split] = {hashlib.sha256(img.tobytes()).hexdigest() for img in batch.images}
        assert len(digests[split]) == 200
    assert not digests["train"] & digests["val"]
    assert not digests["train"] & digests["test"]
    assert not digests["val"] & digests["test"]
    for index in (0, 5):
        assert not np.array_equal(
            np.asarray(shapes.sample(index, "train")[0]), np.asarray(shapes.sample(index, "test")[0])
        )


def test_unknown_split_and_negative_index_are_rejected():
    with pytest.raises(ValueError):
        shapes.sample(0, "holdout")
    with pytest.raises(ValueError):
        shapes.sample(-1)


def test_every_class_present_and_balanced():
    batch = shapes.generate(200, 3)
    assert np.array_equal(np.bincount(batch.labels, minlength=len(shapes.CLASSES)), np.full(10, 20))
    # The gallery's first ten samples of a split show each class once.
    assert sorted(shapes.sample(i, "test")[1] for i in range(10)) == list(range(10))


def test_boxes_hold_every_changed_pixel_and_are_tight():
    n = 400
    batch = shapes.generate(n, 11)
    background = shapes.generate(n, 11, objects=False)
    assert np.array_equal(batch.boxes, background.boxes) and np.array_equal(batch.labels, background.labels)
    changed = (batch.images != background.images).any(axis=-1)
    touching = 0
    for i in range(n):
        x0, y0, x1, y1 = (int(v) for v in batch.boxes[i])
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64, batch.boxes[i]
        outside = changed[i].copy()
        outside[y0:y1, x0:x1] = False
        assert not outside.any(), f"sample {i}: object pixels outside its box"
        inside = changed[i, y0:y1, x0:x1]
        assert inside.sum() >= 20, f"sample {i}: almost nothing drawn"
        if batch.labels[i] in GRATING_ANGLES:
            # The envelope fades to exactly 0 at the box edge, so its last ring of pixels may round to
            # the background (or saturate under noise on both renders): allow two pixels of slack per side.
            rows, cols = np.nonzero(inside)
            assert rows.min() <= 2 and cols.min() <= 2
            assert rows.max() >= inside.shape[0] - 3 and cols.max() >= inside.shape[1] - 3
        else:
            # Opaque, contrasting shapes: changed pixels touch the sides of the box (a one-pixel star tip or an
            # anti-aliased edge may vanish where noise saturates the pixel on both renders: one side of slack).
            sides = [inside[0].any(), inside[-1].any(), inside[:, 0].any(), inside[:, -1].any()]
            assert sum(sides) >= 3, (i, sides)
            touching += all(sides)
    assert touching >= 0.95 * sum(1 for label in batch.labels if label not in GRATING_ANGLES)


def test_shapes_contrast_with_their_background():
    luma = np.array([0.299, 0.587, 0.114])
    batch = shapes.generate(200, 5)
    background = shapes.generate(200, 5, objects=False)
    for i in range(200):
        if batch.labels[i] in GRATING_ANGLES:
            continue
        changed = (batch.images[i] != background.images[i]).any(axis=-1)
        gap = (batch.images[i][changed].astype(float) - background.images[i][changed].astype(float)) @ luma
        # The colour's luminance is ≥ 0.15 (0.3 for gratings) from both background ends; noise averages out.
        assert abs(gap.mean()) >= 0.12 * 255, i


def test_grating_stripes_run_at_their_class_angle():
    batch = shapes.generate(80, 21)
    background = shapes.generate(80, 21, objects=False)
    checked = 0
    for i in range(80):
        angle = GRATING_ANGLES.get(int(batch.labels[i]))
        if angle is None:
            continue
        x0, y0, x1, y1 = batch.boxes[i]
        diff = batch.images[i, y0:y1, x0:x1].astype(float) - background.images[i, y0:y1, x0:x1].astype(float)
        # Stripes at `angle` (counter-clockwise on screen) have their gradient at 90° − angle in
        # (x right, rows down) coordinates: 0° stripes are horizontal, so intensity varies down rows.
        assert angle_gap(stripe_gradient_angle(diff), 90.0 - angle) < 12.0, (i, angle)
        checked += 1
    assert checked == 32
