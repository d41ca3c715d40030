"""The image store's rules (content addressing, byte budget, fair eviction, session pins) hold the same on
both backends: a local folder and Redis (a real redis-server); two stores on one Redis are two replicas."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from server.errors import ApiError
from server.services.images.backends import LocalImages, RedisImages, open_backend
from server.services.images.store import ImageStore
from tests.harness import RedisServer, start_redis


def _noise_png(seed: int, size: int = 64) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


ONE = len(_noise_png(0)) + 2000  # a little more than one stored 64×64 noise image



@pytest.fixture(params=["local", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator:
    """Stores on one backend place: each call is another replica of the same store."""
    opened: list[ImageStore] = []
    prefix = f"t{hashlib.sha256(str(tmp_path).encode()).hexdigest()[:8]}:"

    def make(budget: int = 10_000_000) -> ImageStore:
        if request.param == "local":
            backend = LocalImages(tmp_path / "images")
        else:
            backend = RedisImages(request.getfixturevalue("redis_server").url, prefix=prefix)
        store = ImageStore(backend, budget_bytes=budget, max_pixels=10_000_000, decoded_cache_items=1,
                           decoder=lambda data: Image.open(io.BytesIO(data)).convert("RGB"))
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def test_content_addressed_and_idempotent(make_store) -> None:
    store = make_store()
    data = _noise_png(1)
    first = store.put(data)
    assert first.image_id == hashlib.sha256(data).hexdigest() and first.stored_bytes > 0
    again = store.put(data)
    assert again == first and again.stored_bytes == 0
    assert store.stored_ids() == {first.image_id}
    np.testing.assert_array_equal(np.asarray(store.open_image(first.image_id)),
                                  np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    with pytest.raises(ApiError) as err:
        store.open_image("f" * 64)
    assert err.value.status == 404 and err.value.code == "unknown_image"


def test_another_replica_serves_the_same_bytes(make_store, request: pytest.FixtureRequest) -> None:
    a, b = make_store(), make_store()
    stored = a.put(_noise_png(2), owner="10.0.0.2")
    assert b.png_bytes(stored.image_id) == a.png_bytes(stored.image_id)
    assert b.open_image(stored.image_id).tobytes() == a.open_image(stored.image_id).tobytes()
    assert b.put(_noise_png(2), owner="10.0.0.3").stored_bytes == 0  # known: counted once
    if "redis" in request.node.name:  # one ledger for every replica (a shared folder's ledgers are each its own)
        assert a.total_bytes == b.total_bytes == a.owned_bytes("10.0.0.3") == a.owned_bytes("10.0.0.2")


def test_the_heaviest_clients_oldest_images_go_first_whichever_replica_stores(make_store,
                                                                            request: pytest.FixtureRequest) -> None:
    a = make_store(budget=6 * ONE)
    b = make_store(budget=6 * ONE) if "redis" in request.node.name else a  # across replicas: one ledger
    calm = [a.put(_noise_png(seed), owner="10.0.0.2").image_id for seed in range(2)]
    other = b.put(_noise_png(2), owner="10.0.0.3").image_id
    flood = [(a if seed % 2 else b).put(_noise_png(100 + seed), owner="10.0.0.9").image_id for seed in range(12)]
    kept = a.stored_ids()
    assert set(calm) | {other} <= kept  # global LRU would have taken these: they are the oldest
    flood_kept = [i for i in flood if i in kept]
    assert flood_kept and flood_kept == flood[-len(flood_kept):]  # the flooder's newest stayed
    assert a.total_bytes <= 6 * ONE and b.total_bytes == a.total_bytes
    with pytest.raises(ApiError):
        make_store().open_image(flood[0])  # a fresh replica (no decoded copy) finds it gone


def test_pins_and_shared_uploads_are_spared(make_store) -> None:
    store = make_store(budget=4 * ONE)
    wall = store.put(_noise_png(1), owner="10.0.0.9").image_id
    store.add_pin("K7XQ2M", wall)
    shared = _noise_png(5)
    store.put(shared, owner="10.0.0.2")
    shared_id = store.put(shared, owner="10.0.0.9").image_id
    flood = [store.put(_noise_png(200 + seed), owner="10.0.0.9").image_id for seed in range(8)]
    kept = store.stored_ids()
    assert wall in kept and shared_id in kept and flood[0] not in kept
    store.unpin("K7XQ2M")
    for seed in range(4):
        store.put(_noise_png(300 + seed), owner="10.0.0.9")
    assert wall not in store.stored_ids()


def test_open_backend_reads_the_setting(tmp_path: Path, redis_server: RedisServer) -> None:
    assert isinstance(open_backend(None, tmp_path / "a"), LocalImages)
    folder = open_backend(str(tmp_path / "b"), tmp_path / "a")
    assert isinstance(folder, LocalImages) and folder.root == tmp_path / "b"
    shared = open_backend(redis_server.url.replace("redis://", "redis://:secret@"), tmp_path)
    assert isinstance(shared, RedisImages) and "secret" not in shared.description
    shared.close()


def test_an_unreachable_redis_is_a_clear_503(tmp_path: Path) -> None:
    redis_server = start_redis(tmp_path)
    store = ImageStore(RedisImages(redis_server.url, prefix="gone:"), 10_000_000, 10_000_000,
                       decoder=lambda data: Image.open(io.BytesIO(data)).convert("RGB"))
    try:
        stored = store.put(_noise_png(3))
        redis_server.stop()
        with pytest.raises(ApiError) as err:
            store.png_bytes(stored.image_id)
        assert err.value.status == 503 and err.value.code == "image_store_unavailable"
        assert err.value.headers["Retry-After"]
    finally:
        store.close()
        redis_server.stop()
