"""The one result cache: an LRU within a byte budget whose computations are single-flight and cancelled
only when every caller has gone."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest

from server.errors import ApiError
from server.services.runtime.cache import ResultCache, nbytes_of
from server.services.work.cancel import CancelToken, WorkCancelled, bound, checkpoint
from tests.harness import wait_until


def test_lru_within_the_byte_budget() -> None:
    cache: ResultCache[np.ndarray] = ResultCache("t", budget_bytes=3 * 400)
    for i in range(5):
        cache.put(i, np.zeros(100, np.float32))  # 400 bytes each
    assert len(cache) == 3 and cache.nbytes == 1200
    assert cache.get(0) is None and cache.get(1) is None
    assert cache.get(2) is not None  # now the most recently used
    cache.put(5, np.zeros(100, np.float32))
    assert cache.get(3) is None and cache.get(2) is not None
    assert not cache.get(2).flags.writeable  # shared values are read-only
    cache.put("huge", np.zeros(1000, np.float32))  # larger than the whole budget: not kept, nothing evicted
    assert "huge" not in cache and len(cache) == 3
    assert cache.stats.evictions == 3


def test_max_items_and_discard() -> None:
    cache: ResultCache[int] = ResultCache("t", budget_bytes=1 << 20, max_items=2)
    for key in ("a", "b", "c"):
        cache.put(key, 1)
    assert list(cache.values()) == [1, 1] and "a" not in cache
    cache.discard_where(lambda key: key == "b")
    assert "b" not in cache and cache.nbytes == nbytes_of(1)


def test_concurrent_callers_share_one_computation() -> None:
    cache: ResultCache[np.ndarray] = ResultCache("t", budget_bytes=1 << 20)
    release = threading.Event()
    runs = []

    def compute() -> np.ndarray:
        runs.append(threading.get_ident())
        release.wait(10)
        return np.arange(4, dtype=np.float32)

    results: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_compute("k", compute)))
               for _ in range(10)]
    for thread in threads:
        thread.start()
    wait_until(lambda: cache.waiting == 9)  # one computes, nine wait for it (counted)
    release.set()
    for thread in threads:
        thread.join(10)
    assert len(runs) == 1 and len(results) == 10
    assert all(r is results[0] for r in results)
    assert cache.stats.computations == 1 and cache.stats.shared == 9 and cache.waiting == 0
    assert cache.get_or_compute("k", compute) is results[0]  # and later callers hit the cache
    assert len(runs) == 1


def test_errors_reach_every_caller_and_are_not_cached() -> None:
    cache: ResultCache[int] = ResultCache("t", budget_bytes=1 << 20)
    started = threading.Event()
    release = threading.Event()

    def fail() -> int:
        started.set()
        release.wait(10)
        raise ApiError(422, "bad", "no")

    errors: list[BaseException] = []

    def call() -> None:
        try:
            cache.get_or_compute("k", fail)
        except ApiError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    started.wait(10)
    wait_until(lambda: cache.waiting == 2)
    release.set()
    for thread in threads:
        thread.join(10)
    assert len(errors) == 3 and len({id(e) for e in errors}) == 3  # each caller raises its own copy
    assert all(e.status == 422 for e in errors)
    assert cache.get_or_compute("k", lambda: 7) == 7


def _steps(progress: list[int], release: threading.Event) -> Callable[[], str]:
    def compute() -> str:
        for step in range(2000):
            checkpoint()  # what long computations do between batches
            progress.append(step)
            release.wait(0.005)
        return "done"

    return compute


def test_work_stops_when_every_caller_has_gone() -> None:
    cache: ResultCache[str] = ResultCache("t", budget_bytes=1 << 20)
    progress: list[int] = []
    tokens = [CancelToken(), CancelToken()]
    outcomes: list[str] = []

    def call(token: CancelToken) -> None:
        with bound(token):
            try:
                outcomes.append(cache.get_or_compute("k", _steps(progress, threading.Event())))
            except WorkCancelled:
                outcomes.append("cancelled")

    threads = [threading.Thread(target=call, args=(t,)) for t in tokens]
    threads[0].start()
    wait_until(lambda: len(progress) > 3)
    threads[1].start()
    wait_until(lambda: cache.waiting == 1)
    tokens[0].cancel()  # the leader's client leaves, but the other still waits: the work goes on
    before = len(progress)
    wait_until(lambda: len(progress) > before + 10)
    tokens[1].cancel()  # now nobody waits: the computation stops at its next checkpoint
    for thread in threads:
        thread.join(10)
    # the computation ran in the leader's thread: once both threads have returned, nothing can advance it
    assert not any(thread.is_alive() for thread in threads)
    assert len(progress) < 2000  # it stopped at a checkpoint, long before its end
    assert outcomes == ["cancelled", "cancelled"]
    assert cache.stats.cancelled == 1 and "k" not in cache


def test_a_follower_that_leaves_does_not_stop_the_leader() -> None:
    cache: ResultCache[str] = ResultCache("t", budget_bytes=1 << 20)
    progress: list[int] = []
    release = threading.Event()
    follower_token = CancelToken()
    outcomes: dict[str, str] = {}

    def leader() -> None:
        outcomes["leader"] = cache.get_or_compute("k", _steps(progress, release))

    def follower() -> None:
        with bound(follower_token):
            try:
                cache.get_or_compute("k", lambda: "never")
            except WorkCancelled:
                outcomes["follower"] = "cancelled"

    first = threading.Thread(target=leader)
    first.start()
    wait_until(lambda: len(progress) > 0)
    second = threading.Thread(target=follower)
    second.start()
    wait_until(lambda: cache.waiting == 1)
    follower_token.cancel()
    second.join(10)
    assert outcomes == {"follower": "cancelled"}  # it left at once
    release.set()
    first.join(30)
    assert outcomes["leader"] == "done" and len(progress) == 2000 and cache.get("k") == "done"


def test_a_caller_arriving_after_a_cancellation_computes_again() -> None:
    cache: ResultCache[str] = ResultCache("t", budget_bytes=1 << 20)
    token = CancelToken()
    token.cancel()
    with bound(token), pytest.raises(WorkCancelled):
        cache.get_or_compute("k", lambda: "x")
    assert cache.get_or_compute("k", lambda: "fresh") == "fresh"


def test_waiters_are_bounded() -> None:
    cache: ResultCache[str] = ResultCache("t", budget_bytes=1 << 20, max_waiters=1)
    release = threading.Event()
    leader = threading.Thread(target=lambda: cache.get_or_compute("k", lambda: release.wait(10) and "v"))
    leader.start()
    wait_until(lambda: "k" in cache._flights)
    follower = threading.Thread(target=lambda: cache.get_or_compute("k", lambda: "never"))
    follower.start()
    wait_until(lambda: cache.waiting == 1)
    with pytest.raises(ApiError) as info:
        cache.get_or_compute("k", lambda: "never")
    assert info.value.status == 503 and "Retry-After" in info.value.headers
    release.set()
    leader.join(10)
    follower.join(10)


def test_only_one_cache_class_holds_results() -> None:
    """Every per-image or per-model result goes through ResultCache: no service keeps its own dict/LRU.
    (The image store's index of files on disk, the background jobs' registry and the upload quota's per-address
    event windows hold no results.)"""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parent.parent / "server"
    offenders = []
    for path in root.rglob("*.py"):
        text = path.read_text()
        where = path.relative_to(root).as_posix()
        if where == "services/runtime/cache.py":
            continue
        if re.search(r"OrderedDict\(|lru_cache|functools\.cache\b", text) and where not in (
                "services/images/store.py", "services/work/background_jobs.py", "services/quotas/window.py"):
            offenders.append(where)
    assert offenders == []
