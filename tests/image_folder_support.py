"""A named image folder for tests: random square crops of the offline photos, one subfolder per photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

PER_PHOTO = 34  # × 9 photos = 306 crops


def make_crops(photos: Path, root: Path, per_photo: int = PER_PHOTO, seed: int = 0) -> Path:
    """Random square crops (64–200 px of the photo, saved at 96 px) in one subfolder per photo."""
    rng = np.random.default_rng(seed)
    for photo in sorted(p for p in photos.iterdir() if p.suffix in (".jpg", ".png")):
        image = Image.open(photo).convert("RGB")
        (root / photo.stem).mkdir(parents=True, exist_ok=True)
        for i in range(per_photo):
            side = int(rng.integers(64, min(200, *image.size)))
            x, y = int(rng.integers(0, image.width - side)), int(rng.integers(0, image.height - side))
            crop = image.crop((x, y, x + side, y + side)).resize((96, 96), Image.BILINEAR)
            crop.save(root / photo.stem / f"{i:03d}.{'png' if i % 5 == 0 else 'jpg'}")
    return root
