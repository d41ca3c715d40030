"""The keyed sliding window behind per-client quotas (uploads, failed session-code lookups)."""

from __future__ import annotations

import math

import pytest

from server.errors import ApiError
from server.services.quotas import KeyedWindow, UploadQuota, WindowLimit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_count_limit_waits_for_the_oldest_event_to_age_out() -> None:
    clock = Clock()
    window = KeyedWindow(WindowLimit(60, count=3), clock=clock)
    for _ in range(3):
        assert window.wait_for("a") == 0
        window.add("a")
        clock.now += 10
    assert window.wait_for("a") == pytest.approx(30)  # the first was at t=0, now is t=30
    assert window.wait_for("b") == 0  # another key is not affected
    clock.now += 30.001
    assert window.wait_for("a") == 0 and window.totals("a") == (2, 0)


def test_an_amount_limit_counts_units_and_frees_them_oldest_first() -> None:
    clock = Clock()
    window = KeyedWindow(WindowLimit(100, amount=1000), clock=clock)
    window.add("a", 600)
    clock.now += 20
    window.add("a", 300)
    window.add("a", 50, count=0)  # units added to the last event, no new event
    assert window.totals("a") == (2, 950)
    assert window.wait_for("a", 40) == 0
    assert window.wait_for("a", 100) == pytest.approx(80)  # the 600 ages out at t=100
    assert window.wait_for("a", 900) == pytest.approx(100)  # both must go
    assert math.isinf(window.wait_for("a", 1001))


def test_the_number_of_keys_is_bounded() -> None:
    clock = Clock()
    window = KeyedWindow(WindowLimit(60, count=1), max_keys=100, clock=clock)
    for i in range(1000):
        window.add(f"2001:db8::{i:x}")
    assert len(window) == 100
    assert window.wait_for("2001:db8::3e7") > 0  # the newest are remembered
    expired = KeyedWindow(WindowLimit(1, count=1), clock=clock)
    expired.add("a")
    clock.now += 2
    expired.totals("a")
    assert len(expired) == 0


def test_the_upload_quota_answers_429_with_retry_after_and_413_beyond_the_window() -> None:
    quota = UploadQuota(WindowLimit(600, count=2, amount=1000))
    quota.check("10.0.0.9", 400)
    quota.charge("10.0.0.9", 400)
    quota.charge_more("10.0.0.9", 500)  # its stored copy was larger than the upload
    with pytest.raises(ApiError) as refused:
        quota.check("10.0.0.9", 200)
    assert refused.value.status == 429 and refused.value.code == "upload_quota"
    assert 590 <= int(refused.value.headers["Retry-After"]) <= 600
    quota.check("10.0.0.9", 100)  # 900 + 100 still fits
    quota.charge("10.0.0.9", 100)
    with pytest.raises(ApiError) as counted:
        quota.check("10.0.0.9")
    assert counted.value.status == 429 and "2 uploads" in counted.value.message
    with pytest.raises(ApiError) as huge:
        quota.check("10.0.0.2", 1001)
    assert huge.value.status == 413
    quota.check("10.0.0.2", 10)  # another client has its own quota
