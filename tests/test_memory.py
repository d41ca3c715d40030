"""Resident memory (issue 21): caches count what they really hold, nothing cached carries an autograd graph
unknowingly, glibc's allocator is tuned, and a real uvicorn's RSS stops growing over repeated passes."""

from __future__ import annotations

import gc
import io
import os
import weakref

import httpx
import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from models.models_file import app_registry
from server.errors import ApiError
from server.services.memory.allocator import Allocator
from server.services.runtime.architecture_catalog import ArchitectureCatalog
from server.services.runtime.cache import ResultCache
from server.services.runtime.hooks import forward_with_layer_graph, graph_nbytes
from server.services.runtime.model_runtime import ModelRuntime
from tests.conftest import png_bytes
from tests.harness import live_server


@pytest.mark.parametrize("model", ["lenet5", "tinyvgg-shapes"])
def test_a_kept_graph_is_counted_at_what_autograd_saved(model: str) -> None:
    """Reference: autograd's own saved-tensor hooks, which see every tensor a pass saves for its backward.
    What the graph from the layer keeps = what was saved after the layer's output (not the model's own
    parameters), the layer's output and the logits."""
    runtime = ModelRuntime(torch.device("cpu"), 2, ArchitectureCatalog(1 << 24), 1 << 30, app_registry(None))
    loaded = runtime.load(model, "untrained")
    batch = torch.randn(3, 1, 28, 28) if model == "lenet5" else torch.randn(3, 3, 64, 64)
    params = {t.untyped_storage().data_ptr() for t in (*loaded.module.parameters(), *loaded.module.buffers())}
    saved: dict[int, int] = {}
    after_layer = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if after_layer and storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    handle = loaded.layer(loaded.entry.target_layer).register_forward_hook(lambda *_: after_layer.append(1))
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            logits, leaf = forward_with_layer_graph(loaded, batch, loaded.entry.target_layer)
    finally:
        handle.remove()
    assert leaf is not None
    for t in (leaf, logits):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    assert graph_nbytes(logits, leaf, loaded.module) == sum(saved.values())


def test_a_cached_tensor_with_a_graph_is_refused() -> None:
    cache: ResultCache[torch.Tensor] = ResultCache("test", 1 << 20)
    weight = torch.ones(3, requires_grad=True)
    with pytest.raises(TypeError, match="autograd graph"):
        cache.put("k", weight * 2)
    cache.put("k", (weight * 2).detach())
    assert cache.nbytes == 12


def test_predictions_keep_logits_without_graph_and_graphs_at_their_real_size(client, upload) -> None:
    state = client.app.state
    for value in (20, 120):
        image_id = upload(client, png_bytes(np.full((28, 28), value, dtype=np.uint8)))
        assert client.get(f"/api/models/lenet5/images/{image_id}/predictions").status_code == 200
    logits = state.outputs.cache.values()
    graphs = state.outputs.graphs.values()
    assert logits and all(not r.logits.requires_grad and r.logits.grad_fn is None for r in logits)
    assert state.outputs.cache.nbytes == sum(r.logits.numel() * 4 for r in logits)
    assert graphs and state.outputs.graphs.nbytes == sum(
        graph_nbytes(g.logits, g.activation, state.runtime.load("lenet5", "auto").module) for g in graphs)


def test_the_allocator_is_tuned_and_trims() -> None:
    allocator = Allocator(arena_max=2, mmap_threshold_bytes=0, trim_interval_s=0)  # a fixed threshold would slow this whole test process
    allocator.tune()
    if not allocator.tuned:
        pytest.skip("not glibc")
    allocator.trim()
    assert allocator.trims == 1
    allocator.close()


def _photo(rng: np.random.Generator, size: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def test_resident_memory_levels_off_over_repeated_passes(tmp_path) -> None:
    """A short soak against a real uvicorn (bench/bench_soak.py is the long one): four passes of uploads,
    predictions, atlases, Grad-CAMs and traces over the same images; RSS after the last pass stays within
    10 % (+ 30 MB of slack for a small process) of RSS after the second."""
    rng = np.random.default_rng(0)
    pictures = [_photo(rng, int(s)) for s in rng.integers(64, 200, 6)]
    with live_server(tmp_path) as server, httpx.Client(base_url=server.url, timeout=120) as client:
        process = psutil.Process(server.pid)
        rss = []
        for _ in range(4):
            for picture in pictures:
                image_id = client.post("/api/images", files={"file": ("x.jpg", picture, "image/jpeg")}).json()["image_id"]
                base = f"/api/models/tinyvgg-shapes/images/{image_id}"
                for path, params in ((f"{base}/predictions", {}), (f"{base}/layers/block1.0/atlas.png", {}),
                                     (f"{base}/saliency.npy", {"method": "gradcam"}),
                                     (f"{base}/layers/block1.0/trace", {"channel": 1, "y": 3, "x": 3})):
                    r = client.get(path, params={"weights": "untrained", **params})
                    assert r.status_code == 200, (path, r.text)
            rss.append(process.memory_info().rss)
        assert rss[-1] <= rss[1] * 1.10 + 30 * 2**20, [round(r / 2**20) for r in rss]
    assert os.getpid()  # the server is stopped by live_server


class _Value:
    nbytes = 8


def test_a_computed_value_is_freed_by_reference_counting_alone() -> None:
    """A flight (one computation shared by concurrent callers) and its token must not form a reference cycle
    with the value: the value (a capture's layer outputs, tens of MB) would then stay alive after eviction
    until a full garbage collection, which Python runs by object counts, not bytes (issue 21: RSS grew by
    hundreds of MB per pass). With the collector off, dropping the last reference must free it."""
    cache: ResultCache[_Value] = ResultCache("test", 1 << 20)
    gc.disable()
    try:
        kept = weakref.ref(cache.get_or_compute("kept", _Value))
        shared = weakref.ref(cache.get_or_compute("not kept", _Value, keep=False))
        assert kept() is not None and shared() is None
        cache.discard("kept")
        assert kept() is None

        def fails() -> _Value:
            raise ApiError(503, "overloaded", "no")

        with pytest.raises(ApiError):
            cache.get_or_compute("failed", fails)
        assert not [o for o in gc.get_objects() if type(o).__name__ in ("_Flight", "_FlightToken")]
    finally:
        gc.enable()


def test_requests_leave_no_cycles_that_hold_tensors(client, upload) -> None:
    """Feature maps, predictions, Grad-CAM and a trace with the cyclic collector off: what a full collection
    would free afterwards holds no tensor or array (everything was freed, or is kept by a cache). A first
    round loads the model and its tables (built once, not per request)."""
    rng = np.random.default_rng(0)

    def ask(image_id: str) -> None:
        base = f"/api/models/lenet5/images/{image_id}"
        for path, params in ((f"{base}/predictions", {}), (f"{base}/layers/features.0/atlas.png", {}),
                             (f"{base}/saliency.npy", {"method": "gradcam"}),
                             (f"{base}/layers/features.3/trace", {"channel": 1, "y": 3, "x": 3})):
            assert client.get(path, params=params).status_code == 200

    first, second = (upload(client, png_bytes(rng.integers(0, 256, (28, 28), dtype=np.uint8))) for _ in range(2))
    ask(first)
    gc.collect()
    gc.disable()
    try:
        ask(second)
        client.app.state.activations.cache.clear()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        found = list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    held = [type(o).__name__ for o in found for x in (o, *gc.get_referents(o)) for y in (x, *gc.get_referents(x))
            if isinstance(y, (torch.Tensor, np.ndarray))]
    flights = [type(o).__name__ for o in found if type(o).__name__ in ("_Flight", "_FlightToken")]
    found.clear()
    assert held == [] and flights == []
