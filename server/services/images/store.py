"""Content-addressed image storage on disk, under a byte budget with least-recently-used eviction.

An image's id is the sha256 of the bytes the user uploaded; what is stored is the decoded, upright RGB
working copy as PNG, so every later request (and every replica given the same upload) sees the same pixels.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from server.errors import ApiError
from server.services.images.decode import DecodeLimits, IsolatedDecoder
from server.services.runtime.cache import ResultCache

log = logging.getLogger("convscope")
_IMAGE_ID = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class StoredImage:
    image_id: str
    width: int
    height: int


class ImageStore:
    def __init__(self, root: Path, budget_bytes: int, max_pixels: int, decoded_cache_items: int = 16,
                 decoded_budget_bytes: int = 256 * 1024 * 1024,
                 decoder: Callable[[bytes], Image.Image] | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.budget_bytes = budget_bytes
        self.max_pixels = max_pixels
        # Uploads are decoded in a child process under hard limits (see image_decode.IsolatedDecoder).
        self.decode = decoder or IsolatedDecoder(DecodeLimits(max_pixels=max_pixels))
        self._lock = threading.Lock()
        self._sizes: OrderedDict[str, int] = OrderedDict()  # id → bytes, oldest access first
        # decoded working copies (single-flight: one decode per image however many ask at once)
        self._decoded: ResultCache[Image.Image] = ResultCache("decoded images", decoded_budget_bytes,
                                                              max_items=decoded_cache_items)
        self.model_inputs: object | None = None  # the app's ModelInputs, which registers itself here
        self._scan()

    def _scan(self) -> None:
        self.removed_orphans = self._remove_orphans()
        if self.removed_orphans:
            log.info("removed %d orphan temporary file(s) from %s", self.removed_orphans, self.root)
        entries = []
        for path in self.root.glob("*.png"):
            if _IMAGE_ID.match(path.stem):
                stat = path.stat()
                entries.append((stat.st_atime, path.stem, stat.st_size))
        for _, image_id, size in sorted(entries):
            self._sizes[image_id] = size

    def close(self) -> None:
        """Stop the decoder's idle worker process, if any (the app's shutdown calls this)."""
        close = getattr(self.decode, "close", None)
        if close is not None:
            close()

    def _remove_orphans(self) -> int:
        """Delete temporary files that a killed process left half-written (``<id>.<pid>.<thread>.tmp``): those
        of a process that is gone, and any older than an hour. Counted, so start-up can say so."""
        removed = 0
        for path in self.root.glob("*.tmp"):
            parts = path.name.split(".")
            pid = int(parts[1]) if len(parts) == 4 and parts[1].isdigit() else None
            try:
                stale = time.time() - path.stat().st_mtime > 3600
            except FileNotFoundError:
                continue
            if stale or pid is None or not _process_alive(pid):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def _path(self, image_id: str) -> Path:
        return self.root / f"{image_id}.png"

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    def put(self, data: bytes) -> StoredImage:
        """Store an upload (idempotent: the same bytes give the same id and are decoded once)."""
        image_id = hashlib.sha256(data).hexdigest()
        with self._lock:
            known = image_id in self._sizes and self._path(image_id).is_file()
        if known:
            image = self.open_image(image_id)
            return StoredImage(image_id, image.width, image.height)
        image = self.decode(data)
        buf = io.BytesIO()
        image.save(buf, format="PNG", compress_level=1)
        png = buf.getvalue()
        path = self._path(image_id)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_bytes(png)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        with self._lock:
            self._sizes[image_id] = len(png)
            self._sizes.move_to_end(image_id)
            self._remember(image_id, image)
            self._evict_locked(keep=image_id)
        return StoredImage(image_id, image.width, image.height)

    def open_image(self, image_id: str) -> Image.Image:
        """The stored RGB image (a shared copy: callers must not modify it in place)."""
        if not _IMAGE_ID.match(image_id):
            raise ApiError(404, "unknown_image", "Image ids are 64 lowercase hex digits (the sha256 of the upload).")
        image = self._decoded.get_or_compute(image_id, lambda: self._read(image_id))
        with self._lock:
            self._touch_locked(image_id)
        return image

    def _read(self, image_id: str) -> Image.Image:
        path = self._path(image_id)
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except FileNotFoundError:
            with self._lock:
                self._sizes.pop(image_id, None)
            raise ApiError(
                404, "unknown_image", f"No image {image_id[:12]}… is stored here; upload it again."
            ) from None

    def png_bytes(self, image_id: str) -> bytes:
        self.open_image(image_id)  # validates the id and refreshes its place in the LRU order
        try:
            return self._path(image_id).read_bytes()
        except FileNotFoundError:
            raise ApiError(404, "unknown_image", f"No image {image_id[:12]}… is stored here.") from None

    def _touch_locked(self, image_id: str) -> None:
        if image_id in self._sizes:
            self._sizes.move_to_end(image_id)
            now = time.time()
            try:
                os.utime(self._path(image_id), (now, now))
            except OSError:
                pass

    def _remember(self, image_id: str, image: Image.Image) -> None:
        self._decoded.put(image_id, image)

    def _evict_locked(self, keep: str) -> None:
        total = sum(self._sizes.values())
        while total > self.budget_bytes and len(self._sizes) > 1:
            oldest = next(iter(self._sizes))
            if oldest == keep:
                self._sizes.move_to_end(oldest)
                continue
            total -= self._sizes.pop(oldest)
            self._decoded.discard(oldest)
            self._path(oldest).unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    """Whether another process with this id runs (our own id counts as gone: a store scans its folder
    before it writes anything, so a file with our id is from an earlier process that had it, e.g. pid 1)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
