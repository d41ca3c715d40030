"""Dynamic batching: concurrent requests for one model share a forward pass and get exactly the numbers
they would have got alone; errors and overload reach every member of a batch; nothing is left open."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from fastapi.testclient import TestClient

from server.errors import ApiError
from server.services.runtime.batching import PredictionBatcher
from server.services.runtime.model_runtime import LoadedModel, ModelRuntime
from server.services.work.limiter import WorkLimiter
from tests.harness import wait_until


@pytest.fixture(scope="module")
def runtime() -> ModelRuntime:
    return ModelRuntime(torch.device("cpu"))


def run_held(batcher: PredictionBatcher, limiter: WorkLimiter, loaded: LoadedModel,
             inputs: list[torch.Tensor]) -> list[torch.Tensor | BaseException]:
    """Call the batcher from one thread per input while the only limiter slot is held, so that every call
    queues; then let go and collect what each call returned or raised."""
    results: list[torch.Tensor | BaseException | None] = [None] * len(inputs)

    def call(i: int) -> None:
        try:
            results[i] = batcher.outputs(loaded, inputs[i])
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            results[i] = exc

    with limiter.admit():
        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
        for thread in threads:
            thread.start()
        wait_until(lambda: batcher.pending() == len(inputs))
    for thread in threads:
        thread.join(30)
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


@pytest.mark.parametrize("model_id", ["lenet5", "tinyvgg-shapes", "resnet18"])
def test_batched_outputs_equal_unbatched(runtime: ModelRuntime, model_id: str) -> None:
    loaded = runtime.load(model_id, "untrained")
    spec = loaded.entry.input
    gen = torch.Generator().manual_seed(6)
    count = 4 if model_id == "resnet18" else 7
    inputs = [torch.randn(1, spec.channels, spec.height, spec.width, generator=gen) for _ in range(count)]
    limiter = WorkLimiter(1, 16)
    batcher = PredictionBatcher(limiter, window_s=0.0, max_batch=16)
    results = run_held(batcher, limiter, loaded, inputs)
    assert batcher.stats.forwards == 1 and batcher.stats.largest_batch == count  # one pass served them all
    with torch.inference_mode():
        alone = [loaded.module(x) for x in inputs]
    for got, want in zip(results, alone):
        assert isinstance(got, torch.Tensor) and got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert torch.equal(got.argsort(dim=1, descending=True)[:, :3], want.argsort(dim=1, descending=True)[:, :3])
    assert batcher.pending() == 0


def test_batches_are_capped_and_split(runtime: ModelRuntime) -> None:
    loaded = runtime.load("lenet5", "untrained")
    inputs = [torch.randn(1, 1, 28, 28) for _ in range(7)]
    limiter = WorkLimiter(1, 16)
    batcher = PredictionBatcher(limiter, window_s=0.0, max_batch=3)
    results = run_held(batcher, limiter, loaded, inputs)
    assert batcher.stats.forwards == 3 and batcher.stats.largest_batch == 3
    with torch.inference_mode():
        for got, x in zip(results, inputs):
            torch.testing.assert_close(got, loaded.module(x), rtol=1e-5, atol=1e-5)


def test_different_models_never_share_a_batch(runtime: ModelRuntime) -> None:
    lenet = runtime.load("lenet5", "untrained")
    shallow = runtime.load("mnist-shallow", "untrained")
    x = torch.randn(1, 1, 28, 28)
    limiter = WorkLimiter(1, 16)
    batcher = PredictionBatcher(limiter, window_s=0.0)
    results: dict[str, torch.Tensor] = {}
    with limiter.admit():
        threads = [threading.Thread(target=lambda m=m: results.__setitem__(m.entry.id, batcher.outputs(m, x)))
                   for m in (lenet, shallow)]
        for thread in threads:
            thread.start()
        wait_until(lambda: batcher.pending() == 2)
    for thread in threads:
        thread.join(30)
    assert batcher.stats.forwards == 2
    with torch.inference_mode():
        torch.testing.assert_close(results["lenet5"], lenet.module(x))
        torch.testing.assert_close(results["mnist-shallow"], shallow.module(x))


class Exploding(torch.nn.Module):
    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 1:
            raise self.error
        return x.flatten(1)[:, :3]


def test_a_failing_forward_reaches_every_member_and_the_next_batch_works(runtime: ModelRuntime) -> None:
    real = runtime.load("lenet5", "untrained")
    module = Exploding(RuntimeError("boom"))
    loaded = LoadedModel(real.entry, "untrained", module, torch.device("cpu"), real.preprocess_fn)
    limiter = WorkLimiter(1, 16)
    batcher = PredictionBatcher(limiter, window_s=0.0)
    results = run_held(batcher, limiter, loaded, [torch.randn(1, 1, 28, 28) for _ in range(4)])
    assert all(isinstance(r, RuntimeError) and str(r) == "boom" for r in results)
    assert batcher.pending() == 0 and limiter.active == 0
    assert batcher.outputs(loaded, torch.ones(1, 1, 28, 28)).shape == (1, 3)


def test_overload_refuses_the_whole_batch_with_retry_after(runtime: ModelRuntime) -> None:
    loaded = runtime.load("lenet5", "untrained")
    limiter = WorkLimiter(1, 0)  # no queue at all: a second computation is refused at once
    batcher = PredictionBatcher(limiter, window_s=0.0)
    with limiter.admit():
        with pytest.raises(ApiError) as info:
            batcher.outputs(loaded, torch.randn(1, 1, 28, 28))
    assert info.value.status == 503 and info.value.headers["Retry-After"].isdigit()
    assert batcher.pending() == 0 and limiter.active == 0 and limiter.waiting == 0


def test_an_idle_server_adds_no_batching_delay(runtime: ModelRuntime) -> None:
    loaded = runtime.load("lenet5", "untrained")
    batcher = PredictionBatcher(WorkLimiter(2, 4), window_s=5.0)  # a window that would be obvious
    started = time.perf_counter()
    batcher.outputs(loaded, torch.randn(1, 1, 28, 28))
    assert time.perf_counter() - started < 2.5


def test_predictions_endpoint_batches_concurrent_requests(client: TestClient, upload) -> None:
    import numpy as np

    from tests.conftest import png_bytes

    ids = [upload(client, png_bytes(np.full((28, 28), v, dtype=np.uint8))) for v in (0, 60, 120, 180, 240)]
    alone = [client.get(f"/api/models/lenet5/images/{i}/predictions?top_k=10").json() for i in ids]
    app = client.app
    limiter: WorkLimiter = app.state.limiter  # type: ignore[attr-defined]
    batcher: PredictionBatcher = app.state.batcher  # type: ignore[attr-defined]
    before = batcher.stats.forwards
    together: list = [None] * len(ids)
    app.state.outputs.cache.clear()  # the logits are cached now: forget them so that the model runs again

    def fetch(k: int) -> None:
        together[k] = client.get(f"/api/models/lenet5/images/{ids[k]}/predictions?top_k=10").json()

    # Hold every compute slot (the express one for quick work too) so that the five requests pile up in one batch.
    with limiter.admit(), limiter.admit(), limiter.admit(quick=True):
        threads = [threading.Thread(target=fetch, args=(k,)) for k in range(len(ids))]
        for thread in threads:
            thread.start()
        wait_until(lambda: batcher.pending() == len(ids))
    for thread in threads:
        thread.join(30)
    assert batcher.stats.forwards - before == 1
    for got, want in zip(together, alone):
        assert [p["index"] for p in got["predictions"]] == [p["index"] for p in want["predictions"]]
        for g, w in zip(got["predictions"], want["predictions"]):
            assert g["probability"] == pytest.approx(w["probability"], abs=1e-6)
