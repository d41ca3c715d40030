"""Content-addressed image storage under a byte budget with fair eviction, on a local folder or in Redis.

An image's id is the sha256 of the bytes the user uploaded; what is stored is the decoded, upright RGB
working copy as PNG, so every later request (and every replica given the same upload) sees the same pixels.
Where the PNGs and their ledger live is the backend's business (:mod:`server.services.images.backends`:
a folder by default, Redis with ``CONVSCOPE_IMAGE_STORE=redis://…`` so that any replica serves any image);
the decoded working copy is cached in each process.

Over budget the rules of :mod:`server.services.images.eviction` choose what goes, for every backend: the
heaviest client's least recently used image first. Images a live classroom session refers to (its wall, the
teacher's current image) are pinned by the session (:meth:`ImageStore.pin`) and never evicted until it lets
them go; pins are this process's (each replica follows every session's images, see classroom/pins.py).
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from server.errors import ApiError
from server.services.images.backends import IMAGE_ID, IMAGE_ID_PATTERN, UNKNOWN_OWNER, ImageBackend, LocalImages
from server.services.images.decode import DecodeLimits, IsolatedDecoder
from server.services.images.eviction import owned_bytes, plan_eviction
from server.services.runtime.cache import ResultCache

log = logging.getLogger("convscope")

__all__ = ["IMAGE_ID", "IMAGE_ID_PATTERN", "UNKNOWN_OWNER", "ImageStore", "StoredImage"]


@dataclass(frozen=True)
class StoredImage:
    image_id: str
    width: int
    height: int
    stored_bytes: int = field(default=0, compare=False)  # bytes this upload added (0: already stored)


class ImageStore:
    def __init__(self, root: Path | ImageBackend, budget_bytes: int, max_pixels: int, decoded_cache_items: int = 16,
                 decoded_budget_bytes: int = 256 * 1024 * 1024,
                 decoder: Callable[[bytes], Image.Image] | None = None) -> None:
        """``root``: a folder (the local backend) or a backend (see :func:`backends.open_backend`)."""
        self.backend: ImageBackend = LocalImages(root) if isinstance(root, (str, Path)) else root
        self.budget_bytes = budget_bytes
        self.max_pixels = max_pixels
        # Uploads are decoded in a child process under hard limits (see image_decode.IsolatedDecoder).
        self.decode = decoder or IsolatedDecoder(DecodeLimits(max_pixels=max_pixels))
        self._lock = threading.Lock()
        self._pins: dict[str, frozenset[str]] = {}  # holder (a session) → the ids it keeps
        self._pinned_at: dict[str, float] = {}  # holder → when it last pinned (see replace_pins)
        # decoded working copies (single-flight: one decode per image however many ask at once)
        self._decoded: ResultCache[Image.Image] = ResultCache("decoded images", decoded_budget_bytes,
                                                              max_items=decoded_cache_items)
        self.model_inputs: object | None = None  # the app's ModelInputs, which registers itself here

    @property
    def root(self) -> Path | None:
        """The folder of the local backend (None for Redis)."""
        return getattr(self.backend, "root", None)

    @property
    def removed_orphans(self) -> int:
        return int(getattr(self.backend, "removed_orphans", 0))

    def close(self) -> None:
        """Stop the decoder's idle worker process, if any, and the backend's connections (the app's
        shutdown calls this)."""
        close = getattr(self.decode, "close", None)
        if close is not None:
            close()
        self.backend.close()

    @property
    def total_bytes(self) -> int:
        return self.backend.total_bytes()

    def put(self, data: bytes, owner: str = UNKNOWN_OWNER) -> StoredImage:
        """Store an upload by ``owner`` (a client's address; idempotent: the same bytes give the same id and
        are decoded once)."""
        image_id = hashlib.sha256(data).hexdigest()
        if self.backend.has(image_id):
            image = self.open_image(image_id)
            self.backend.own(image_id, owner)
            return StoredImage(image_id, image.width, image.height)
        image = self.decode(data)
        buf = io.BytesIO()
        image.save(buf, format="PNG", compress_level=1)
        png = buf.getvalue()
        added = self.backend.write(image_id, png, owner)
        self._remember(image_id, image)
        self._evict(keep=image_id)
        return StoredImage(image_id, image.width, image.height, added)

    def open_image(self, image_id: str) -> Image.Image:
        """The stored RGB image (a shared copy: callers must not modify it in place)."""
        if not IMAGE_ID.match(image_id):
            raise ApiError(404, "unknown_image", "Image ids are 64 lowercase hex digits (the sha256 of the upload).")
        image = self._decoded.get_or_compute(image_id, lambda: self._read(image_id))
        self.backend.own(image_id, None)
        return image

    def _read(self, image_id: str) -> Image.Image:
        png = self.backend.read(image_id)
        if png is None:
            raise ApiError(404, "unknown_image", f"No image {image_id[:12]}… is stored here; upload it again.")
        with Image.open(io.BytesIO(png)) as img:
            return img.convert("RGB")

    def png_bytes(self, image_id: str) -> bytes:
        self.open_image(image_id)  # validates the id and refreshes its place in the LRU order
        png = self.backend.read(image_id)
        if png is None:
            raise ApiError(404, "unknown_image", f"No image {image_id[:12]}… is stored here.")
        return png

    def stored_ids(self) -> set[str]:
        return {entry.image_id for entry in self.backend.entries()}

    def _remember(self, image_id: str, image: Image.Image) -> None:
        self._decoded.put(image_id, image)

    # --- pins: images a live classroom session refers to -----------------------------------------------
    def pin(self, holder: str, image_ids: set[str] | frozenset[str]) -> None:
        """``holder`` (a session's code) keeps exactly these images from eviction, until :meth:`unpin`."""
        with self._lock:
            self._pins[holder] = frozenset(image_ids)
            self._pinned_at[holder] = time.monotonic()

    def add_pin(self, holder: str, image_id: str) -> None:
        with self._lock:
            self._pins[holder] = self._pins.get(holder, frozenset()) | {image_id}
            self._pinned_at[holder] = time.monotonic()

    def unpin(self, holder: str) -> None:
        with self._lock:
            self._pins.pop(holder, None)
            self._pinned_at.pop(holder, None)

    def replace_pins(self, pins: dict[str, frozenset[str]], read_at: float) -> None:
        """Every holder's pins as read from the sessions' store at ``read_at`` (``time.monotonic()``): holders
        that pinned since keep what they pinned (the read may predate it)."""
        with self._lock:
            fresh = {h: self._pins[h] for h, at in self._pinned_at.items() if at >= read_at and h in self._pins}
            self._pins = {**pins, **fresh}
            self._pinned_at = {holder: self._pinned_at.get(holder, read_at) for holder in self._pins}

    def pinned(self) -> frozenset[str]:
        with self._lock:
            return frozenset().union(*self._pins.values()) if self._pins else frozenset()

    # --- owners and fair eviction ------------------------------------------------------------------------
    def owned_bytes(self, owner: str) -> int:
        return owned_bytes(self.backend.entries(), owner)

    def _evict(self, keep: str) -> None:
        """While over budget, the rules of :func:`plan_eviction` decide; one eviction at a time (across
        replicas for a shared backend), over a fresh read of the ledger."""
        if self.backend.total_bytes() <= self.budget_bytes:
            return
        with self.backend.exclusive():
            steps, total = plan_eviction(self.backend.entries(), self.budget_bytes, self.pinned() | {keep})
            for image_id, owner in steps:
                if owner is None:
                    self.backend.remove(image_id)
                    self._decoded.discard(image_id)
                else:
                    self.backend.disown(image_id, owner)
        if total > self.budget_bytes:
            log.warning("image store over budget (%d of %d bytes): the rest is pinned by class sessions",
                        total, self.budget_bytes)
