"""Attacks on the per-client shares, against a real uvicorn (issue 21 §2): what a hostile student can
send to get more than one client's share, or to push other clients' requests out.

Each test holds the pool's only slot from the test itself (so the requests it sends wait, deterministically),
sends real HTTP requests from loopback addresses of their own (127.0.0.N: distinct machines), and looks at
the pool's counts to know a request is queued. Distinct requests ask for distinct results (images, target
classes): identical ones would share one computation and hold one place, and a result computed by an earlier
test is a cache hit that never enters a pool, so each test uses images of its own. Each heavy-pool test asks
for a saliency method not run before (Score-CAM, occlusion, SmoothGrad): once measured below the heavy
threshold on LeNet-5, a method's work moves to the cheap pool.

Tried and held (no change needed): header id churn inside one address, made-up session codes, a live
session's made-up student ids beyond the session's bound, X-Forwarded-For from loopback without proxy trust.
Found and fixed: a live session's students counted as one client in a full queue, so one machine pushed them
out (the push-out compared whole places, not places per share); and made-up student ids holding the whole
session's share kept the session's real students out (429).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import numpy as np
import pytest

from server.main import create_app
from server.services.work.clients import ClientId
from server.services.work.limiter import WorkLimiter
from server.settings import Settings
from tests.conftest import png_bytes
from tests.harness import serving, wait_until

SALIENCY = "/api/models/lenet5/images/{}/saliency.npy"
ATLAS = "/api/models/lenet5/images/{}/layers/features.0/atlas.png"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, str, list[str]]]:
    """One real uvicorn for the module: the heavy pool has one slot, two waiting places and one place per
    client; the cheap pool one slot and two places per client, and no express slot (LeNet's atlases, once
    measured, are quick work and would take it instead of waiting); a class session counts as two clients."""
    settings = Settings(storage_dir=tmp_path_factory.mktemp("attacks") / "images", max_active_heavy_work=1,
                        max_waiting_heavy_work=2, heavy_work_per_client=1, max_active_work=1, max_waiting_work=16,
                        cheap_work_per_client=2, session_client_shares=2, express_work=0)
    app = create_app(settings)
    with serving(app) as port:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=60) as client:
            images = [client.post("/api/images", files={"file": ("d.png", png_bytes(
                np.full((28, 28), 20 * i, dtype=np.uint8)), "image/png")}).json()["image_id"] for i in range(12)]
        yield app, base, images


class Asker:
    """Requests sent from threads, each from its own loopback address; ``heard[name]`` is the status."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.heard: dict[str, int] = {}
        self.threads: list[threading.Thread] = []

    def send(self, name: str, machine: int, url: str, params: dict | None = None, **headers: str) -> None:
        def ask() -> None:
            transport = httpx.HTTPTransport(local_address=f"127.0.0.{machine}")
            with httpx.Client(base_url=self.base, transport=transport, timeout=60) as client:
                self.heard[name] = client.get(url, params=params, headers=headers).status_code

        self.threads.append(threading.Thread(target=ask))
        self.threads[-1].start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(60)


@contextmanager
def slot_held(pool: WorkLimiter) -> Iterator[threading.Event]:
    """The pool's only slot, held by another client until the block ends (or the event is set)."""
    release = threading.Event()

    def hold() -> None:
        with pool.admit(client=ClientId.of("10.9.9.9")):
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    wait_until(lambda: pool.active == 1, 10, "the slot to be held")
    try:
        yield release
    finally:
        release.set()
        holder.join(30)


def _settled(pool: WorkLimiter) -> None:
    wait_until(lambda: pool.active == 0 and pool.waiting == 0 and len(pool.shares) == 0, 60, "the pool to empty")


def _session(base: str) -> str:
    with httpx.Client(base_url=base, timeout=30) as client:
        r = client.post("/api/sessions")
    assert r.status_code == 201, r.text
    return r.json()["code"]


def test_header_ids_and_forwarded_addresses_from_one_machine_are_one_client(server) -> None:
    """Churning X-ConvScope-Client and X-Forwarded-For (uvicorn believes it from loopback by default) from
    one machine: its second heavy request is 429, the first still waits."""
    app, base, images = server
    heavy: WorkLimiter = app.state.heavy_limiter
    asker = Asker(base)
    with slot_held(heavy):
        asker.send("first", 5, SALIENCY.format(images[0]), {"method": "scorecam"},
                   **{"X-Forwarded-For": "10.1.0.1", "X-ConvScope-Client": "tab-1"})
        wait_until(lambda: heavy.waiting == 1, 10, "the first request to queue")
        for n in range(3):
            asker.send(f"churn-{n}", 5, SALIENCY.format(images[1 + n]), {"method": "scorecam"},
                       **{"X-Forwarded-For": f"10.1.0.{2 + n}", "X-ConvScope-Client": f"tab-{2 + n}"})
        wait_until(lambda: len(asker.heard) == 3, 20, "the churned requests' answers")
        assert set(asker.heard.values()) == {429} and heavy.waiting == 1
    asker.join()
    assert asker.heard["first"] == 200
    _settled(heavy)


def test_made_up_session_codes_and_student_ids_give_no_share_beyond_the_session(server) -> None:
    """A session code that is no live session is only the address; a live session's made-up student ids
    hold at most the session's bound (two clients' shares here), then 429."""
    app, base, images = server
    heavy: WorkLimiter = app.state.heavy_limiter
    code = _session(base)
    asker = Asker(base)
    with slot_held(heavy):
        asker.send("own", 6, SALIENCY.format(images[4]), {"method": "occlusion"})
        wait_until(lambda: heavy.waiting == 1, 10, "the address's own request to queue")
        asker.send("invented", 6, SALIENCY.format(images[5]), {"method": "occlusion"},
                   **{"X-ConvScope-Session": "ZZ9ZZ9", "X-ConvScope-Student": "made-up-student-1"})
        wait_until(lambda: "invented" in asker.heard, 20, "the made-up session's answer")
        assert asker.heard["invented"] == 429
    asker.join()
    _settled(heavy)
    cheap: WorkLimiter = app.state.limiter
    asker = Asker(base)
    with slot_held(cheap):
        for n in range(5):  # the session's bound: 2 shares × 2 places = 4 places, whatever the ids
            asker.send(f"minted-{n}", 7, ATLAS.format(images[n]), **{"X-ConvScope-Session": code,
                                                                    "X-ConvScope-Student": f"minted-id-{n:04d}"})
            if n < 4:
                wait_until(lambda w=n + 1: cheap.waiting == w, 10, "a minted id's request to queue")
        wait_until(lambda: "minted-4" in asker.heard, 20, "the fifth minted id's answer")
        assert asker.heard["minted-4"] == 429 and cheap.waiting == 4
    asker.join()
    assert [asker.heard[f"minted-{n}"] for n in range(4)] == [200] * 4
    _settled(cheap)


def test_minted_student_ids_cannot_keep_a_real_student_of_the_session_out(server) -> None:
    """Two made-up ids holding two places each fill the session's four: a real student of the session
    still gets a place (the newest request of the id holding most gives it up, 503), not a 429."""
    app, base, images = server
    cheap: WorkLimiter = app.state.limiter
    code = _session(base)
    asker = Asker(base)
    with slot_held(cheap):
        for n in range(4):
            asker.send(f"forged-{n}", 8, ATLAS.format(images[5 + n]), **{"X-ConvScope-Session": code,
                                                                    "X-ConvScope-Student": f"forged-id-{n // 2}xx"})
            wait_until(lambda w=n + 1: cheap.waiting == w, 10, "a forged request to queue")
        asker.send("student", 9, ATLAS.format(images[9]), **{"X-ConvScope-Session": code,
                                                            "X-ConvScope-Student": "real-student-0001"})
        wait_until(lambda: "forged-3" in asker.heard, 20, "the forger's newest request to give up its place")
        assert asker.heard == {"forged-3": 503} and cheap.waiting == 4
    asker.join()
    assert asker.heard["student"] == 200, asker.heard
    _settled(cheap)


def test_one_machine_cannot_push_a_class_sessions_students_out_of_a_full_queue(server) -> None:
    """Two students of a live session fill the heavy queue (the session counts as two clients: one place
    per share each). One machine asking then hears 503 (queue full); it does not push a student out."""
    app, base, images = server
    heavy: WorkLimiter = app.state.heavy_limiter
    code = _session(base)
    asker = Asker(base)
    with slot_held(heavy):
        for n in range(2):
            asker.send(f"student-{n}", 10 + n, SALIENCY.format(images[6 + n]), {"method": "smoothgrad"},
                       **{"X-ConvScope-Session": code, "X-ConvScope-Student": f"student-id-{n:04d}"})
            wait_until(lambda w=n + 1: heavy.waiting == w, 10, "a student's request to queue")
        asker.send("pusher", 12, SALIENCY.format(images[8]), {"method": "smoothgrad"})
        wait_until(lambda: "pusher" in asker.heard, 20, "the pusher's answer")
        assert asker.heard == {"pusher": 503} and heavy.waiting == 2
    asker.join()
    assert asker.heard == {"pusher": 503, "student-0": 200, "student-1": 200}
    _settled(heavy)
