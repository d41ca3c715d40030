"""A folder of the user's own images, read one way for every feature (dataset examples, training).

Two layouts, found by looking:

- an ImageFolder-style tree: one subfolder per class, images inside (``root/cat/001.jpg``); the classes are
  the subfolder names, sorted, and an image's label is its subfolder's index;
- a flat folder of images (``root/001.jpg``): one class, named after the folder.

Only JPEG and PNG files count (by extension, then checked by opening the header). The listing is bounded:
at most ``max_files`` images, taken class by class in sorted order (the rest are counted, not listed), and
a file whose header does not open or that has more than ``max_pixels`` pixels is skipped and counted. The
order is stable, so an image's index means the same file across restarts while the folder is unchanged;
:attr:`ImageFolder.fingerprint` changes when it does not.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

EXTENSIONS = (".jpg", ".jpeg", ".png")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")
MAX_WORKING_SIDE = 1024  # a loaded image is at most this long (JPEG draft decoding): models see far less


class ImageFolderError(ValueError):
    """The folder cannot be used (missing, not a folder, no images); the message says why."""


@dataclass(frozen=True)
class ImageFolder:
    name: str
    root: Path
    files: tuple[Path, ...]  # relative to root
    labels: tuple[int, ...]
    classes: tuple[str, ...]
    layout: str  # "classes" | "flat"
    skipped: int  # files left out: unreadable headers or too many pixels
    truncated: int  # images beyond max_files, not listed
    fingerprint: str  # changes when the listed files (names, sizes, times) change

    def __len__(self) -> int:
        return len(self.files)

    def path(self, index: int) -> Path:
        return self.root / self.files[index]

    def load(self, index: int) -> Image.Image:
        """Image ``index`` as RGB, at most MAX_WORKING_SIDE on its longer side."""
        with Image.open(self.path(index)) as image:
            image.draft("RGB", (MAX_WORKING_SIDE, MAX_WORKING_SIDE))
            rgb = image.convert("RGB")
        if max(rgb.size) > MAX_WORKING_SIDE:
            rgb.thumbnail((MAX_WORKING_SIDE, MAX_WORKING_SIDE))
        return rgb

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "images": len(self.files), "classes": list(self.classes), "layout": self.layout,
                "skipped": self.skipped, "not_listed": self.truncated}


def check_name(name: str) -> str:
    """``name`` when it is a valid folder name (letters, digits, ``_`` and ``-``, up to 40), else ValueError."""
    if not NAME.fullmatch(name):
        raise ImageFolderError(f"image folder name {name!r} must be letters, digits, '_' or '-' (at most 40)")
    return name


def parse_option(text: str) -> tuple[str, Path]:
    """``NAME=PATH`` (the ``--image-folder`` option) → (name, path)."""
    name, sep, path = text.partition("=")
    if not sep or not path:
        raise ImageFolderError(f"--image-folder takes NAME=PATH, not {text!r}")
    return check_name(name.strip()), Path(path).expanduser()


def _images_in(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_file() and e.name.lower().endswith(EXTENSIONS)
                      and not e.name.startswith("."))


def _header_ok(path: Path, max_pixels: int) -> bool:
    try:
        with Image.open(path, formats=("JPEG", "PNG")) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 (any failure to read a header means: not a usable image)
        return False
    return 0 < width * height <= max_pixels


def scan_folder(name: str, root: Path, max_files: int, max_pixels: int = 50_000_000) -> ImageFolder:
    """List ``root`` (see the module docstring); :class:`ImageFolderError` when it cannot be used."""
    check_name(name)
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise ImageFolderError(f"image folder {name!r}: {root} is not a folder")
    with os.scandir(root) as entries:
        subfolders = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    groups = [(sub, _images_in(root / sub)) for sub in subfolders]
    groups = [(sub, names) for sub, names in groups if names]
    layout = "classes" if groups else "flat"
    if not groups:
        groups = [(root.name or name, _images_in(root))]
    files: list[Path] = []
    labels: list[int] = []
    skipped = truncated = 0
    digest = hashlib.sha256()
    for label, (sub, names) in enumerate(groups):
        for file_name in names:
            if len(files) >= max_files:
                truncated += 1
                continue
            relative = Path(sub, file_name) if layout == "classes" else Path(file_name)
            if not _header_ok(root / relative, max_pixels):
                skipped += 1
                continue
            stat = (root / relative).stat()
            digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            files.append(relative)
            labels.append(label)
    if not files:
        raise ImageFolderError(f"image folder {name!r}: no readable JPEG or PNG images in {root}")
    classes = tuple(sub for sub, _ in groups)
    return ImageFolder(name, root, tuple(files), tuple(labels), classes, layout, skipped, truncated,
                       digest.hexdigest()[:16])
