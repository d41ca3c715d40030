"""Content-addressed image storage on disk, under a byte budget with fair eviction.

An image's id is the sha256 of the bytes the user uploaded; what is stored is the decoded, upright RGB
working copy as PNG, so every later request (and every replica given the same upload) sees the same pixels.

Over budget, the store evicts the least recently used image *of the client that holds the most bytes*
(an image belongs to the clients that uploaded it), so one student flooding the store evicts their own
uploads, not the class's. Images a live classroom session refers to (its wall, the teacher's current
image) are pinned by the session (:meth:`ImageStore.pin`) and never evicted until it lets them go.
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
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from server.errors import ApiError
from server.services.images.decode import DecodeLimits, IsolatedDecoder
from server.services.runtime.cache import ResultCache

log = logging.getLogger("convscope")
IMAGE_ID_PATTERN = "^[0-9a-f]{64}$"  # an image id: the sha256 of the stored bytes (the one definition)
IMAGE_ID = re.compile(IMAGE_ID_PATTERN)
_IMAGE_ID = IMAGE_ID


@dataclass(frozen=True)
class StoredImage:
    image_id: str
    width: int
    height: int
    stored_bytes: int = field(default=0, compare=False)  # bytes this upload added (0: already stored)


UNKNOWN_OWNER = ""  # images found on disk at start-up, or stored without naming a client


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
        self._owners: dict[str, set[str]] = {}  # id → the clients that uploaded it
        self._owned: dict[str, OrderedDict[str, None]] = {}  # client → its ids, oldest access first
        self._owned_bytes: dict[str, int] = {}
        self._pins: dict[str, frozenset[str]] = {}  # holder (a session) → the ids it keeps
        self._pinned_at: dict[str, float] = {}  # holder → when it last pinned (see replace_pins)
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
            self._own_locked(image_id, UNKNOWN_OWNER)

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

    def put(self, data: bytes, owner: str = UNKNOWN_OWNER) -> StoredImage:
        """Store an upload by ``owner`` (a client's address; idempotent: the same bytes give the same id and
        are decoded once)."""
        image_id = hashlib.sha256(data).hexdigest()
        with self._lock:
            known = image_id in self._sizes and self._path(image_id).is_file()
        if known:
            image = self.open_image(image_id)
            with self._lock:
                if image_id in self._sizes:
                    self._own_locked(image_id, owner)
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
            self._forget_locked(image_id)  # a file another replica wrote meanwhile: counted once
            self._sizes[image_id] = len(png)
            self._own_locked(image_id, owner)
            self._remember(image_id, image)
            self._evict_locked(keep=image_id)
        return StoredImage(image_id, image.width, image.height, len(png))

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
                self._forget_locked(image_id)
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
            for owner in self._owners.get(image_id, ()):
                self._owned[owner].move_to_end(image_id)
            now = time.time()
            try:
                os.utime(self._path(image_id), (now, now))
            except OSError:
                pass

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
            return self._pinned_locked()

    def _pinned_locked(self) -> frozenset[str]:
        return frozenset().union(*self._pins.values()) if self._pins else frozenset()

    # --- owners and fair eviction ------------------------------------------------------------------------
    def owned_bytes(self, owner: str) -> int:
        with self._lock:
            return self._owned_bytes.get(owner, 0)

    def _own_locked(self, image_id: str, owner: str) -> None:
        owners = self._owners.setdefault(image_id, set())
        if owner not in owners:
            owners.add(owner)
            self._owned.setdefault(owner, OrderedDict())[image_id] = None
            self._owned_bytes[owner] = self._owned_bytes.get(owner, 0) + self._sizes[image_id]
        self._touch_locked(image_id)

    def _disown_locked(self, image_id: str, owner: str) -> None:
        self._owners[image_id].discard(owner)
        owned = self._owned[owner]
        owned.pop(image_id, None)
        self._owned_bytes[owner] -= self._sizes[image_id]
        if not owned:
            del self._owned[owner], self._owned_bytes[owner]

    def _forget_locked(self, image_id: str) -> None:
        if image_id not in self._sizes:
            return
        for owner in list(self._owners.get(image_id, ())):
            self._disown_locked(image_id, owner)
        self._owners.pop(image_id, None)
        self._sizes.pop(image_id)

    def _evict_locked(self, keep: str) -> None:
        """While over budget: the heaviest client's least recently used image goes (unless pinned, or the
        image just stored). An image several clients uploaded is only taken off the heavy one's account."""
        total = sum(self._sizes.values())
        if total <= self.budget_bytes:
            return
        pinned = self._pinned_locked()
        spared = set(pinned) | {keep}
        weights = {owner: size - sum(self._sizes[i] for i in spared if i in self._owned[owner])
                   for owner, size in self._owned_bytes.items()}
        while total > self.budget_bytes:
            owner = max((o for o, w in weights.items() if w > 0), key=weights.__getitem__, default=None)
            if owner is None:
                break  # only pinned images and the new one are left: the store may exceed its budget
            victim = next(i for i in self._owned[owner] if i not in spared)
            size = self._sizes[victim]
            weights[owner] -= size
            if len(self._owners[victim]) > 1:  # someone else's too: no longer counted as this client's
                self._disown_locked(victim, owner)
                continue
            self._forget_locked(victim)
            total -= size
            self._decoded.discard(victim)
            self._path(victim).unlink(missing_ok=True)
        if total > self.budget_bytes:
            log.warning("image store over budget (%d of %d bytes): the rest is pinned by class sessions",
                        total, self.budget_bytes)


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
