"""Files a service keeps on disk as a cache, held within a byte budget: the oldest go first."""

from __future__ import annotations

from pathlib import Path


def evict_oldest(folder: Path, pattern: str, budget_bytes: int, keep: Path, companion_suffixes: tuple[str, ...] = ()) -> int:
    """Delete the least recently written files matching ``pattern`` (never ``keep``) until the rest fit in
    ``budget_bytes``; each deleted file's companions (the same name with another suffix) go with it.
    Returns how many files were deleted."""
    files = sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime)
    total = sum(p.stat().st_size for p in files)
    deleted = 0
    for path in files:
        if total <= budget_bytes:
            break
        if path == keep:
            continue
        total -= path.stat().st_size
        path.unlink(missing_ok=True)
        for suffix in companion_suffixes:
            path.with_suffix(suffix).unlink(missing_ok=True)
        deleted += 1
    return deleted
