"""Named image folders (``convscope serve --image-folder NAME=PATH``, or ``CONVSCOPE_IMAGE_FOLDERS`` as JSON):
the one place the server finds them, for dataset examples (``examples.json?dataset=folder:NAME``) and for
training. Reading a folder is :mod:`models.datasets.image_folder`; here the names are checked, each folder is
listed once (again when asked to refresh), and an unknown name is a 404 with a sentence."""

from __future__ import annotations

import threading
from pathlib import Path

from models.datasets.image_folder import ImageFolder, ImageFolderError, check_name, scan_folder
from server.errors import ApiError

PREFIX = "folder:"


class ImageFolders:
    def __init__(self, folders: dict[str, Path], max_files: int, max_pixels: int) -> None:
        self.paths = {check_name(name): Path(path) for name, path in folders.items()}
        self.max_files = max(1, max_files)
        self.max_pixels = max_pixels
        self._listed: dict[str, ImageFolder] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return list(self.paths)

    def get(self, name: str, refresh: bool = False) -> ImageFolder:
        """The listed folder; 404 ``unknown_image_folder`` for a name this server was not given, 422
        ``image_folder_unusable`` when its folder is missing or holds no images."""
        path = self.paths.get(name)
        if path is None:
            known = ", ".join(self.paths) or "none (start the server with --image-folder NAME=PATH)"
            raise ApiError(404, "unknown_image_folder", f"There is no image folder named {name!r}; known: {known}.")
        with self._lock:
            hit = None if refresh else self._listed.get(name)
        if hit is not None:
            return hit
        try:
            listed = scan_folder(name, path, self.max_files, self.max_pixels)
        except (ImageFolderError, OSError) as exc:
            raise ApiError(422, "image_folder_unusable", f"{exc}.") from exc
        with self._lock:
            self._listed[name] = listed
        return listed


def folder_name(dataset: str) -> str | None:
    """``NAME`` of a ``folder:NAME`` dataset value, else None."""
    return dataset[len(PREFIX):] if dataset.startswith(PREFIX) else None
