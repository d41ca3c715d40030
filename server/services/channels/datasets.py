"""The datasets a channel's examples are searched in: ``mnist`` (the 10,000 MNIST test images, index =
position in the file), ``shapes`` (the Shapes test split), ``photos`` (the offline gallery photos sorted by
name) and ``folder:NAME`` (a named image folder, :mod:`server.services.image_folders`; index = position in
its listing). Each says in words what it is and how many images it holds, for the answer and the page."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from models.datasets import mnist, shapes
from server.errors import ApiError
from server.services.image_folders import ImageFolders, folder_name
from server.services.images import samples

DATASETS = ("mnist", "shapes", "photos")
Batches = Callable[[int, int], Iterator[tuple[int, list[Image.Image]]]]  # (batch size, start) → (start, images)


@dataclass(frozen=True)
class Dataset:
    name: str
    size: int
    load: Callable[[int], Image.Image]
    sample_id: Callable[[int], str | None]  # the gallery's id for image i (GET /api/samples/{id}.png), if any
    description: str  # "the 10,000 MNIST test images"
    key: str = ""  # what the cached tables are filed under (a folder's changes with its contents)
    total: int = 0  # images in the source, when more than ``size`` are there (a scan budget): else = size
    generate: Batches | None = None  # a faster way to make a batch than one load per image

    def batches(self, size: int, start: int = 0) -> Iterator[tuple[int, list[Image.Image]]]:
        """(start, images) batches of ``size`` from image ``start`` on (a resumed scan starts past 0)."""
        if self.generate is not None:
            yield from self.generate(size, start)
            return
        for lo in range(start, self.size, size):
            yield lo, [self.load(i) for i in range(lo, min(self.size, lo + size))]

    def limited(self, count: int) -> Dataset:
        """``count`` images spread evenly over the dataset (a scan budget: every class of a class tree keeps
        its share), saying so. Its index ``i`` is the ``i``-th of them, in listing order."""
        if count >= self.size:
            return self
        picks = np.linspace(0, self.size - 1, count).round().astype(np.int64)
        load, sample_id = self.load, self.sample_id
        return dataclasses.replace(self, size=count, total=self.size, generate=None,
                                   load=lambda i: load(int(picks[i])), sample_id=lambda i: sample_id(int(picks[i])),
                                   description=f"{count:,} of {self.description.removeprefix('the ')}, "
                                               "spread evenly (the scan budget)")

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "images": self.size, "of": self.total or self.size, "description": self.description}


def open_dataset(name: str, data_dir: Path | None, folders: ImageFolders | None) -> Dataset:
    """The named dataset; 404 when this server does not have its files, 422 for an unknown name."""
    if name == "mnist":
        found = mnist.find_data_dir(data_dir)
        if found is None:
            raise ApiError(404, "dataset_unavailable", "This server has no MNIST test images (../shared/data/mnist).")
        images, _ = mnist.load_mnist_test(found)
        return Dataset("mnist", len(images), lambda i: Image.fromarray(np.ascontiguousarray(images[i]), mode="L"),
                       lambda i: f"mnist-test-{i}", f"the {len(images):,} MNIST test images", "mnist")
    if name == "shapes":
        count = shapes.SPLIT_SIZES["test"]
        return Dataset("shapes", count, lambda i: shapes.sample(i, "test")[0], lambda i: f"shapes-test-{i}",
                       f"the {count:,} Shapes test images", "shapes", generate=_shapes_batches)
    if name == "photos":
        files = samples._photo_files(samples._photos_dir(data_dir))
        stems = sorted(files)
        if not stems:
            raise ApiError(404, "dataset_unavailable", "This server has no photos (../shared/data/images).")

        def open_photo(i: int) -> Image.Image:
            with Image.open(files[stems[i]]) as image:
                return image.convert("RGB")

        return Dataset("photos", len(stems), open_photo, lambda i: f"photos-{stems[i]}",
                       f"the {len(stems)} offline gallery photos", "photos")
    folder = folder_name(name)
    if folder is not None and folders is not None:
        listed = folders.get(folder)
        classes = f" in {len(listed.classes)} classes" if listed.layout == "classes" else ""
        return Dataset(name, len(listed), listed.load, lambda i: None,
                       f"the {len(listed):,} images of folder {folder!r}{classes}", f"{name}@{listed.fingerprint}")
    if folder is not None:
        raise ApiError(404, "unknown_image_folder", f"There is no image folder named {folder!r}.")
    raise ApiError(422, "unknown_dataset",
                   f"dataset must be one of {', '.join(DATASETS)} or folder:NAME, not {name!r}.")


def _shapes_batches(size: int, start: int = 0) -> Iterator[tuple[int, list[Image.Image]]]:
    """Shapes test images generated a batch at a time (one generator call per batch, not per image)."""
    count = shapes.SPLIT_SIZES["test"]
    for lo in range(start, count, size):
        batch = shapes.generate(min(size, count - lo), shapes._split_seed("test"), start=lo)
        yield lo, [Image.fromarray(a) for a in batch.images]
