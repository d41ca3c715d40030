"""Content-addressed storage under a byte budget, with least-recently-used eviction."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from server.errors import ApiError
from server.services.images.store import ImageStore


def _noise_png(seed: int, size: int = 64) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_put_is_idempotent_and_content_addressed(tmp_path) -> None:
    store = ImageStore(tmp_path, budget_bytes=10_000_000, max_pixels=10_000_000)
    data = _noise_png(1)
    first = store.put(data)
    assert first.image_id == hashlib.sha256(data).hexdigest()
    assert store.put(data) == first
    assert len(list(tmp_path.glob("*.png"))) == 1
    image = store.open_image(first.image_id)
    assert image.mode == "RGB" and image.size == (64, 64)
    np.testing.assert_array_equal(np.asarray(image), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def test_least_recently_used_is_evicted_under_the_budget(tmp_path) -> None:
    one = len(_noise_png(0)) + 2000
    store = ImageStore(tmp_path, budget_bytes=3 * one, max_pixels=10_000_000, decoded_cache_items=1)
    ids = [store.put(_noise_png(seed)).image_id for seed in range(3)]
    store.open_image(ids[0])  # now the most recently used
    fourth = store.put(_noise_png(3)).image_id
    fifth = store.put(_noise_png(4)).image_id
    assert store.total_bytes <= 3 * one
    kept = {p.stem for p in tmp_path.glob("*.png")}
    assert ids[0] in kept and fourth in kept and fifth in kept
    assert ids[1] not in kept
    with pytest.raises(ApiError) as err:
        store.open_image(ids[1])
    assert err.value.status == 404


def test_store_survives_a_restart(tmp_path) -> None:
    stored = ImageStore(tmp_path, budget_bytes=10_000_000, max_pixels=10_000_000).put(_noise_png(7))
    again = ImageStore(tmp_path, budget_bytes=10_000_000, max_pixels=10_000_000)
    assert again.open_image(stored.image_id).size == (64, 64)
    assert again.total_bytes > 0


@pytest.mark.parametrize("bad", ["../../etc/passwd", "a" * 63, "A" * 64, "", "0" * 64 + "/.."])
def test_ids_cannot_escape_the_store(tmp_path, bad: str) -> None:
    store = ImageStore(tmp_path, budget_bytes=10_000_000, max_pixels=10_000_000)
    with pytest.raises(ApiError) as err:
        store.open_image(bad)
    assert err.value.status == 404 and err.value.code == "unknown_image"


def test_large_photos_are_stored_at_a_bounded_working_size(tmp_path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (5000, 1000), (10, 20, 30)).save(buf, format="JPEG")
    stored = ImageStore(tmp_path, budget_bytes=100_000_000, max_pixels=50_000_000).put(buf.getvalue())
    assert (stored.width, stored.height) == (2048, 410)
