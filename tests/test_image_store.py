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


# --- fairness: one client's flood evicts its own images; sessions pin theirs (issue 21 §3) ------------------

def _kept(tmp_path) -> set[str]:
    return {p.stem for p in tmp_path.glob("*.png")}


def test_over_budget_the_heaviest_clients_oldest_images_go_first(tmp_path) -> None:
    one = len(_noise_png(0)) + 2000
    store = ImageStore(tmp_path, budget_bytes=6 * one, max_pixels=10_000_000, decoded_cache_items=1)
    calm = [store.put(_noise_png(seed), owner="10.0.0.2").image_id for seed in range(2)]
    other = store.put(_noise_png(2), owner="10.0.0.3").image_id
    flood = [store.put(_noise_png(100 + seed), owner="10.0.0.9").image_id for seed in range(12)]
    kept = _kept(tmp_path)
    # Global LRU would have taken the calm clients' images first: they are the oldest.
    assert set(calm) | {other} <= kept
    assert flood[-1] in kept and flood[0] not in kept
    assert [i for i in flood if i in kept] == flood[-len([i for i in flood if i in kept]):]  # its newest stayed
    assert store.total_bytes <= 6 * one
    assert store.owned_bytes("10.0.0.9") <= store.total_bytes - store.owned_bytes("10.0.0.2")


def test_pinned_images_are_never_evicted_until_unpinned(tmp_path) -> None:
    one = len(_noise_png(0)) + 2000
    store = ImageStore(tmp_path, budget_bytes=4 * one, max_pixels=10_000_000, decoded_cache_items=1)
    wall = store.put(_noise_png(1), owner="10.0.0.9").image_id  # the flooder's own image, but on the wall
    store.add_pin("K7XQ2M", wall)
    flood = [store.put(_noise_png(200 + seed), owner="10.0.0.9").image_id for seed in range(8)]
    assert wall in _kept(tmp_path) and store.open_image(wall).size == (64, 64)
    assert flood[0] not in _kept(tmp_path)
    store.unpin("K7XQ2M")
    for seed in range(4):  # a budget's worth of new uploads: nothing holds the old one any more
        store.put(_noise_png(300 + seed), owner="10.0.0.9")
    assert wall not in _kept(tmp_path)


def test_only_pinned_images_left_lets_the_store_exceed_its_budget_by_the_newest(tmp_path) -> None:
    one = len(_noise_png(0)) + 2000
    store = ImageStore(tmp_path, budget_bytes=3 * one, max_pixels=10_000_000, decoded_cache_items=1)
    pinned = [store.put(_noise_png(seed), owner="a").image_id for seed in range(3)]
    store.pin("ABCDEF", set(pinned))
    newest = [store.put(_noise_png(10 + seed), owner="b").image_id for seed in range(3)]
    kept = _kept(tmp_path)
    assert set(pinned) <= kept and newest[-1] in kept and not set(newest[:-1]) & kept


def test_an_image_two_clients_uploaded_is_not_evicted_for_one_of_them(tmp_path) -> None:
    one = len(_noise_png(0)) + 2000
    store = ImageStore(tmp_path, budget_bytes=4 * one, max_pixels=10_000_000, decoded_cache_items=1)
    shared = _noise_png(5)
    store.put(shared, owner="10.0.0.2")
    shared_id = store.put(shared, owner="10.0.0.9").image_id
    for seed in range(6):
        store.put(_noise_png(400 + seed), owner="10.0.0.9")
    assert shared_id in _kept(tmp_path)


def test_pins_read_from_the_sessions_keep_newer_local_pins(tmp_path) -> None:
    import time

    store = ImageStore(tmp_path, budget_bytes=10_000_000, max_pixels=10_000_000)
    read_at = time.monotonic()
    store.add_pin("NEWONE", "b" * 64)  # pinned after the sessions were read
    store.replace_pins({"OLDONE": frozenset({"a" * 64})}, read_at)
    assert store.pinned() == {"a" * 64, "b" * 64}
    store.replace_pins({}, time.monotonic())
    assert store.pinned() == frozenset()
