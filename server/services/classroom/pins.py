"""Keeps the images a live session refers to (its wall, the teacher's current image) in the image store:
each session pins its images there (``ImageStore.pin``) until it ends, so a student flooding the store
with uploads cannot evict what the class is looking at.

This replica's own changes pin at once; a full re-read every ``interval_s`` seconds follows what other
replicas did (with Redis) and lets go of sessions that ended by expiry.
"""

from __future__ import annotations

import asyncio
import logging
import time

from server.services.classroom.backend import SessionBackend, state_image
from server.services.images import ImageStore

log = logging.getLogger("convscope")


class SessionPins:
    def __init__(self, backend: SessionBackend, store: ImageStore, interval_s: float = 5.0) -> None:
        self.backend = backend
        self.store = store
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="convscope-session-pins")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def add(self, code: str, image_id: str) -> None:
        """Pin one image for ``code`` now (before it is on the wall: it cannot be evicted in between)."""
        self.store.add_pin(code, image_id)

    def release(self, code: str) -> None:
        self.store.unpin(code)

    async def refresh_session(self, code: str) -> None:
        """Pin exactly what ``code`` refers to now (after a state change, a cleared wall, a refused submission)."""
        record = await self.backend.get(code)
        if record is None:
            self.store.unpin(code)
            return
        items = await self.backend.submissions(code)
        self.store.pin(code, state_image(record.state) | {item.image_id for item in items})

    async def refresh_all(self) -> None:
        read_at = time.monotonic()
        referenced = await self.backend.referenced_images()
        self.store.replace_pins({code: frozenset(ids) for code, ids in referenced.items()}, read_at)

    async def _follow(self) -> None:
        while True:
            try:
                await self.refresh_all()
            except Exception as exc:  # noqa: BLE001 - the next round tries again; pins stay as they were
                log.warning("refreshing the images class sessions use failed: %s", exc)
            await asyncio.sleep(self.interval_s)
