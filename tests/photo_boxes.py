"""Object boxes for the offline photos (``../shared/data/images``), drawn by hand by looking at each photo.

Boxes are in the *original* image's pixels, ``(x0, y0, x1, y1)`` with x1 and y1 exclusive, around the one
object the photo shows and the ImageNet classes that name it (``classes``: index → label; the first is
the expected class, the README's where it gives one). :func:`box_in_input` maps a box through the model's
resize-and-centre-crop onto the model input; ``tests/test_saliency_default_layer.py`` checks that mapping
against the real preprocessing with a painted rectangle.

Left out of the box test, with the reason:

- ``chelsea.png``: the cat fills the whole centre crop, so its box would be the whole input and a test on
  it could not fail; it is checked for the border warning instead.
- ``rocket.jpg``: the rocket is 21 px wide in the 224 px input, less than one cell (32 px) of the 7×7 maps
  of the deep layers; every 7×7 layer puts the peak one cell beside it, on the dark sky. Checked for the
  border warning instead.
"""

from __future__ import annotations

from dataclasses import dataclass

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class BoxedPhoto:
    file: str
    box: Box  # original pixels
    classes: dict[int, str]  # the classes that name the boxed object; the first is the expected one
    what: str


BOXED_PHOTOS: tuple[BoxedPhoto, ...] = (
    BoxedPhoto("cat.jpg", (100, 15, 465, 365), {281: "tabby", 282: "tiger cat"}, "the tabby's head and chest"),
    BoxedPhoto("dog.jpg", (280, 160, 660, 725), {162: "beagle", 166: "Walker hound"}, "the beagle, ears to paws"),
    BoxedPhoto("coffee.png", (165, 15, 430, 310), {967: "espresso", 968: "cup"}, "the cup (not the saucer)"),
    BoxedPhoto("pizza.jpg", (50, 35, 640, 426), {963: "pizza"}, "the pizza (not the plate behind it)"),
    BoxedPhoto("shuttle.jpg", (200, 60, 295, 280), {812: "space shuttle"},
               "the orbiter, tank and boosters with the launch tower beside them (not the clouds of exhaust)"),
    BoxedPhoto("zebra.jpg", (300, 45, 690, 640), {340: "zebra"}, "the zebra's head and neck"),
    BoxedPhoto("astronaut.png", (275, 340, 512, 512), {560: "football helmet", 518: "crash helmet"},
               "the helmet in front (the model's top-1 object; the photo has no ImageNet class for a person)"),
)
UNBOXED_PHOTOS: tuple[str, ...] = ("chelsea.png", "rocket.jpg")


def box_in_input(size: tuple[int, int], box: Box, resize: int, crop: int) -> Box:
    """``box`` in the original ``size`` (width, height) → the model input's pixels, for torchvision's and
    timm's Resize(shorter side → ``resize``) then CenterCrop(``crop``), clipped to the input."""
    width, height = size
    new_w, new_h = (resize, int(resize * height / width)) if width <= height else (int(resize * width / height), resize)
    left, top = round((new_w - crop) / 2.0), round((new_h - crop) / 2.0)
    sx, sy = new_w / width, new_h / height
    x0, y0, x1, y1 = box
    return (min(crop, max(0.0, x0 * sx - left)), min(crop, max(0.0, y0 * sy - top)),
            min(crop, max(0.0, x1 * sx - left)), min(crop, max(0.0, y1 * sy - top)))


def inside(box: Box, row: int, col: int) -> bool:
    """Whether pixel (row, col) — its centre, row + ½ and col + ½ — lies in ``box``."""
    x0, y0, x1, y1 = box
    return x0 <= col + 0.5 < x1 and y0 <= row + 0.5 < y1
