"""A named image folder as training data (``dataset = "folder:NAME"``): the user's own photos, ImageFolder layout.

- Classes: the subfolders (sorted), as :mod:`models.datasets.image_folder` lists them. A folder with fewer
  than two classes (a flat folder, or one subfolder) cannot be trained on: :class:`ConfigError` naming
  ``dataset``.
- Bounded: at most ``max_images`` images and ``max_bytes`` bytes of files per run. A bigger folder is thinned
  evenly over its listing (classes are listed one after the other, so every class keeps its share).
- Held out (deterministic from the seed): within each class, the images are shuffled by a generator seeded
  with the run's seed, and the first ``len // 5`` of them (at least one when the class has two or more) are
  held out; the rest train, in an order shuffled by the same generator, so that ``train_size`` keeps every
  class's share.
- Each image becomes the architecture's input the way :func:`preprocess` shows it in every view: the centre
  square, resized (bilinear) to height×width, greyscale or RGB as the network reads it; then
  ``(pixel/255 − mean) / std`` with the model's own mean/std (a models-file model's), else 0.5 / 0.5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.datasets.image_folder import ImageFolder, ImageFolderError, scan_folder
from models.preprocessing import Preprocess, centre_square
from models.training.config import ConfigError

HELD_OUT_FRACTION = 5  # one in five of each class is held out
FOLDER_MEAN, FOLDER_STD = 0.5, 0.5  # a bundled architecture trained on a folder (as Shapes)


def listing(name: str, path: Path, max_files: int, max_pixels: int) -> ImageFolder:
    """The folder's images (headers only: cheap enough for the server to check a run before it starts);
    ConfigError naming ``dataset`` when it cannot be trained on."""
    try:
        listed = scan_folder(name, path, max_files, max_pixels)
    except (ImageFolderError, OSError) as exc:
        raise ConfigError("dataset", f"dataset: folder:{name} cannot be used ({exc})") from None
    counts = np.bincount(np.asarray(listed.labels), minlength=len(listed.classes))
    present = [c for c, n in zip(listed.classes, counts) if n]
    if listed.layout != "classes" or len(present) < 2:
        found = ("its images are not in class subfolders (one class)" if listed.layout != "classes"
                 else f"it has 1 class ({present[0]})")
        raise ConfigError("dataset", f"dataset: folder:{name} cannot be trained on: {found}; training needs at least "
                          "two classes, one subfolder of images per class (ImageFolder layout)")
    return listed


def picks(listed: ImageFolder, max_images: int, max_bytes: int) -> np.ndarray:
    """Indices into the listing: all of it, or an even thinning that fits ``max_images`` and ``max_bytes``."""
    sizes = np.array([listed.path(i).stat().st_size for i in range(len(listed))], dtype=np.int64)
    count = min(len(listed), max_images)
    chosen = np.linspace(0, len(listed) - 1, count).round().astype(np.int64)
    while count > 1 and sizes[chosen].sum() > max_bytes:
        count = max(1, min(count - 1, int(count * max_bytes / sizes[chosen].sum())))
        chosen = np.unique(np.linspace(0, len(listed) - 1, count).round().astype(np.int64))
    return chosen


def split(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) positions into ``labels``; see the module docstring for the rule."""
    generator = torch.Generator().manual_seed(seed)
    train: list[int] = []
    held: list[int] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        order = members[torch.randperm(len(members), generator=generator).numpy()]
        n_held = len(members) // HELD_OUT_FRACTION or (1 if len(members) >= 2 else 0)
        held.extend(order[:n_held].tolist())
        train.extend(order[n_held:].tolist())
    shuffled = torch.randperm(len(train), generator=generator).numpy()
    return np.asarray(train, dtype=np.int64)[shuffled], np.asarray(sorted(held), dtype=np.int64)


def fit(image: Image.Image, channels: int, height: int, width: int) -> np.ndarray:
    """uint8 C×H×W: the centre square of ``image``, resized to height×width, greyscale or RGB."""
    picture = centre_square(image.convert("L" if channels == 1 else "RGB")).resize((width, height), Image.BILINEAR)
    array = np.array(picture, dtype=np.uint8)  # a writable copy (torch.from_numpy takes it as it is)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def preprocess(channels: int, height: int, width: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Preprocess:
    """What a model trained on a folder reads, in every view: :func:`fit`, then /255, minus mean, over std."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def apply(image: Image.Image) -> torch.Tensor:
        pixels = torch.from_numpy(np.ascontiguousarray(fit(image, channels, height, width)))
        return (pixels.to(torch.float32) / 255.0 - mean_t) / std_t

    return Preprocess(apply, tuple(mean), tuple(std))


def read_images(listed: ImageFolder, indices: np.ndarray, shape: tuple[int, int, int]) -> tuple[torch.Tensor, np.ndarray]:
    """The images at ``indices`` as one uint8 N×C×H×W tensor (each decoded at most 1024 px, then fitted), and
    which of ``indices`` were read: a file whose header opened but whose pixels do not (truncated, corrupt) is
    left out, not the end of the run."""
    channels, height, width = shape
    out = np.empty((len(indices), channels, height, width), dtype=np.uint8)
    read = np.ones(len(indices), dtype=bool)
    for row, index in enumerate(indices):
        try:
            out[row] = fit(listed.load(int(index)), channels, height, width)
        except (OSError, ValueError, SyntaxError):  # what PIL raises for a broken file
            read[row] = False
    return torch.from_numpy(out[read]), read
