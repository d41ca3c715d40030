"""Where stored images and their ledger live: a local folder (one replica, or several sharing a folder) or
Redis (any number of replicas on any number of machines, ``CONVSCOPE_IMAGE_STORE=redis://…``).

A backend keeps, per image id, the PNG working copy and a ledger entry: its size, when it was last used
(a counter, so the order is exact) and the clients that uploaded it. It knows nothing of budgets or
fairness: the rules (:func:`server.services.images.eviction.plan_eviction`) are the same for both, and
run in :class:`server.services.images.store.ImageStore` over :meth:`ImageBackend.entries`.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from server.errors import ApiError

log = logging.getLogger("convscope")
IMAGE_ID_PATTERN = "^[0-9a-f]{64}$"  # an image id: the sha256 of the stored bytes (the one definition)
IMAGE_ID = re.compile(IMAGE_ID_PATTERN)
UNKNOWN_OWNER = ""  # images found on disk at start-up, or stored without naming a client


@dataclass(frozen=True)
class LedgerEntry:
    image_id: str
    size: int
    last_used: float  # larger = more recent; only the order matters
    owners: frozenset[str]


class ImageBackend(Protocol):
    """Blobs plus ledger. Every method is safe to call from many threads (and, for Redis, many replicas)."""

    description: str

    def read(self, image_id: str) -> bytes | None: ...
    def has(self, image_id: str) -> bool: ...
    def write(self, image_id: str, png: bytes, owner: str) -> int:
        """Store (unless present: then only own and touch); the bytes this call added (0 if it was there)."""
    def own(self, image_id: str, owner: str | None) -> bool:
        """Mark as just used, and (``owner`` not None) as uploaded by ``owner`` too; False when absent."""
    def disown(self, image_id: str, owner: str) -> None: ...
    def remove(self, image_id: str) -> None: ...
    def entries(self) -> list[LedgerEntry]: ...
    def total_bytes(self) -> int: ...
    def exclusive(self) -> AbstractContextManager[None]:
        """Held while an eviction is planned and applied (one at a time, across replicas for Redis)."""
    def close(self) -> None: ...


class LocalImages:
    """PNG files named by id in ``root``; the ledger in memory, rebuilt from the files (their access times
    give the order) when the process starts."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.description = f"folder {self.root}"
        self._lock = threading.Lock()
        self._evicting = threading.Lock()
        self._sizes: dict[str, int] = {}
        self._used: dict[str, float] = {}
        self._owners: dict[str, set[str]] = {}
        self._clock = 0
        self.removed_orphans = self._remove_orphans()
        if self.removed_orphans:
            log.info("removed %d orphan temporary file(s) from %s", self.removed_orphans, self.root)
        found = []
        for path in self.root.glob("*.png"):
            if IMAGE_ID.match(path.stem):
                stat = path.stat()
                found.append((stat.st_atime, path.stem, stat.st_size))
        for _, image_id, size in sorted(found):
            self._sizes[image_id] = size
            self._owners[image_id] = {UNKNOWN_OWNER}
            self._tick_locked(image_id)

    def path(self, image_id: str) -> Path:
        return self.root / f"{image_id}.png"

    def _tick_locked(self, image_id: str) -> None:
        self._clock += 1
        self._used[image_id] = self._clock

    def read(self, image_id: str) -> bytes | None:
        try:
            return self.path(image_id).read_bytes()
        except FileNotFoundError:
            with self._lock:
                self._forget_locked(image_id)
            return None

    def has(self, image_id: str) -> bool:
        with self._lock:
            return self._adopt_locked(image_id)

    def _adopt_locked(self, image_id: str) -> bool:
        """Whether the file is there; one another process wrote into a shared folder joins this ledger (each
        replica sharing a folder counts what it knows of: Redis is the backend that shares one ledger)."""
        try:
            size = self.path(image_id).stat().st_size
        except FileNotFoundError:
            self._forget_locked(image_id)
            return False
        if image_id not in self._sizes:
            self._sizes[image_id] = size
            self._owners[image_id] = {UNKNOWN_OWNER}
            self._tick_locked(image_id)
        return True

    def write(self, image_id: str, png: bytes, owner: str) -> int:
        path = self.path(image_id)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_bytes(png)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        with self._lock:
            added = 0 if image_id in self._sizes else len(png)  # a file another replica wrote meanwhile: once
            self._sizes[image_id] = len(png)
            self._owners.setdefault(image_id, set()).add(owner)
            self._tick_locked(image_id)
        return added

    def own(self, image_id: str, owner: str | None) -> bool:
        with self._lock:
            if image_id not in self._sizes and not self._adopt_locked(image_id):
                return False
            if owner is not None:
                self._owners[image_id].add(owner)
            self._tick_locked(image_id)
        now = time.time()
        try:
            os.utime(self.path(image_id), (now, now))  # the order survives a restart
        except OSError:
            pass
        return True

    def disown(self, image_id: str, owner: str) -> None:
        with self._lock:
            self._owners.get(image_id, set()).discard(owner)

    def remove(self, image_id: str) -> None:
        with self._lock:
            self._forget_locked(image_id)
        self.path(image_id).unlink(missing_ok=True)

    def _forget_locked(self, image_id: str) -> None:
        self._sizes.pop(image_id, None)
        self._used.pop(image_id, None)
        self._owners.pop(image_id, None)

    def entries(self) -> list[LedgerEntry]:
        with self._lock:
            return [LedgerEntry(i, size, self._used[i], frozenset(self._owners.get(i) or {UNKNOWN_OWNER}))
                    for i, size in self._sizes.items()]

    def total_bytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._evicting:
            yield

    def close(self) -> None:
        pass

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


# Redis layout (P = prefix): P img:<id> the PNG; hash P img-size (id → bytes); sorted set P img-used (id →
# use counter); set P img-own:<id> (its uploaders); P img-bytes the total; P img-clock the counter.
# Each change is one Lua script, so the ledger is consistent whichever replica writes.
_WRITE = """
local t = redis.call('INCR', KEYS[5])
local added = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], ARGV[2])
  added = string.len(ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[1], added)
  redis.call('INCRBY', KEYS[6], added)
end
redis.call('ZADD', KEYS[3], t, ARGV[1])
redis.call('SADD', KEYS[4], ARGV[3])
return added
"""
_OWN = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local t = redis.call('INCR', KEYS[5])
redis.call('ZADD', KEYS[3], t, ARGV[1])
if ARGV[2] == '1' then redis.call('SADD', KEYS[4], ARGV[3]) end
return 1
"""
_REMOVE = """
local size = redis.call('HGET', KEYS[2], ARGV[1])
if size then redis.call('INCRBY', KEYS[6], -tonumber(size)) end
redis.call('DEL', KEYS[1], KEYS[4])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return size and 1 or 0
"""


class RedisImages:
    """Blobs and ledger in Redis, shared by every replica given the same URL (and prefix)."""

    def __init__(self, url: str, prefix: str = "convscope:", lock_timeout_s: float = 30.0) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30)
        self.prefix = prefix
        self.description = f"Redis {_without_password(url)}"
        self.lock_timeout_s = lock_timeout_s
        self._write = self._redis.register_script(_WRITE)
        self._own = self._redis.register_script(_OWN)
        self._remove = self._redis.register_script(_REMOVE)
        self.removed_orphans = 0  # a Redis write is atomic: nothing is ever left half-written

    def _keys(self, image_id: str) -> list[str]:
        p = self.prefix
        return [f"{p}img:{image_id}", f"{p}img-size", f"{p}img-used", f"{p}img-own:{image_id}", f"{p}img-clock",
                f"{p}img-bytes"]

    @contextmanager
    def _unavailable_is_503(self) -> Iterator[None]:
        from redis.exceptions import RedisError

        try:
            yield
        except RedisError as exc:
            log.warning("image store (%s) failed: %s", self.description, exc)
            raise ApiError(503, "image_store_unavailable", "The shared image store (Redis) does not answer; "
                           "try again in a moment.", {"Retry-After": "2"}) from None

    def read(self, image_id: str) -> bytes | None:
        with self._unavailable_is_503():
            return self._redis.get(self._keys(image_id)[0])

    def has(self, image_id: str) -> bool:
        with self._unavailable_is_503():
            return bool(self._redis.exists(self._keys(image_id)[0]))

    def write(self, image_id: str, png: bytes, owner: str) -> int:
        with self._unavailable_is_503():
            return int(self._write(keys=self._keys(image_id), args=[image_id, png, owner]))

    def own(self, image_id: str, owner: str | None) -> bool:
        with self._unavailable_is_503():
            flag = "0" if owner is None else "1"
            return bool(self._own(keys=self._keys(image_id), args=[image_id, flag, owner or ""]))

    def disown(self, image_id: str, owner: str) -> None:
        with self._unavailable_is_503():
            self._redis.srem(self._keys(image_id)[3], owner)

    def remove(self, image_id: str) -> None:
        with self._unavailable_is_503():
            self._remove(keys=self._keys(image_id), args=[image_id])

    def entries(self) -> list[LedgerEntry]:
        p = self.prefix
        with self._unavailable_is_503():
            sizes = {k.decode(): int(v) for k, v in self._redis.hgetall(f"{p}img-size").items()}
            used = {k.decode(): float(s) for k, s in self._redis.zrange(f"{p}img-used", 0, -1, withscores=True)}
            ids = [i for i in sizes if i in used]
            with self._redis.pipeline(transaction=False) as pipe:
                for image_id in ids:
                    pipe.smembers(f"{p}img-own:{image_id}")
                owners = pipe.execute()
        return [LedgerEntry(i, sizes[i], used[i], frozenset(o.decode() for o in own) or frozenset({UNKNOWN_OWNER}))
                for i, own in zip(ids, owners)]

    def total_bytes(self) -> int:
        with self._unavailable_is_503():
            return int(self._redis.get(f"{self.prefix}img-bytes") or 0)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._unavailable_is_503():
            lock = self._redis.lock(f"{self.prefix}img-evicting", timeout=self.lock_timeout_s,
                                    blocking_timeout=self.lock_timeout_s)
            if not lock.acquire():
                raise ApiError(503, "image_store_busy", "Another replica is making room in the image store; "
                               "try again in a moment.", {"Retry-After": "2"})
        try:
            yield
        finally:
            with self._unavailable_is_503():
                lock.release()

    def close(self) -> None:
        self._redis.close()


def open_backend(setting: str | None, default_root: Path, prefix: str = "convscope:") -> LocalImages | RedisImages:
    """``CONVSCOPE_IMAGE_STORE``: unset → ``default_root`` (the storage folder); ``redis://…``,
    ``rediss://…`` or ``unix://…`` → Redis; anything else → that folder."""
    if not setting:
        return LocalImages(default_root)
    if setting.split("://", 1)[0] in ("redis", "rediss", "unix"):
        return RedisImages(setting, prefix)
    return LocalImages(Path(setting))


def _without_password(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//", url)


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
