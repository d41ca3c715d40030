"""server/services/work/disk_budget.py: on-disk caches stay within their byte budget, oldest first."""

from __future__ import annotations

import os
from pathlib import Path

from server.services.work.disk_budget import evict_oldest


def _write(folder: Path, name: str, size: int, age: int) -> Path:
    path = folder / name
    path.write_bytes(b"x" * size)
    os.utime(path, (1_000_000 + age, 1_000_000 + age))
    return path


def test_oldest_files_go_first_until_the_rest_fit(tmp_path: Path) -> None:
    a, b, c = (_write(tmp_path, f"t-{n}.npz", 100, age) for n, age in (("a", 1), ("b", 2), ("c", 3)))
    other = _write(tmp_path, "other.bin", 1000, 0)  # not matched by the pattern: never counted nor deleted
    assert evict_oldest(tmp_path, "t-*.npz", 150, keep=c) == 2
    assert not a.exists() and not b.exists() and c.exists() and other.exists()


def test_the_kept_file_survives_even_when_it_is_the_oldest(tmp_path: Path) -> None:
    old = _write(tmp_path, "t-old.png", 100, 1)
    new = _write(tmp_path, "t-new.png", 100, 2)
    companion = tmp_path / "t-new.json"
    companion.write_text("{}")
    assert evict_oldest(tmp_path, "t-*.png", 100, keep=old, companion_suffixes=(".json",)) == 1
    assert old.exists() and not new.exists() and not companion.exists()


def test_nothing_goes_within_budget(tmp_path: Path) -> None:
    files = [_write(tmp_path, f"t-{i}.npz", 10, i) for i in range(3)]
    assert evict_oldest(tmp_path, "t-*.npz", 30, keep=files[0]) == 0
    assert all(p.exists() for p in files)
