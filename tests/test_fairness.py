"""Who a client is, and the share each client gets in the heavy pool, the cheap pool and the background-job
queue (issue 21).

A header id is a hint inside its address: it cannot make a new client. A live class session's students each
get a share, and together at most the session's bound. Each 429 is shown happening, and another client
still being served at the same moment."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import ExitStack

import numpy as np
import pytest
from fastapi.testclient import TestClient

from server.errors import ApiError
from server.main import create_app
from server.services.work.background_jobs import BackgroundJobs
from server.services.work.cancel import bound, current_token
from server.services.work.clients import ClientId, ClientIdentities
from server.services.work.limiter import RecentUse, WorkLimiter
from server.services.work.shares import Shares
from server.settings import Settings
from tests.conftest import png_bytes
from tests.harness import wait_until


def _scope(address: str, **headers: str) -> dict:
    return {"type": "http", "client": (address, 5000),
            "headers": [(k.lower().replace("_", "-").encode(), v.encode()) for k, v in headers.items()]}


def _identify(identities: ClientIdentities, address: str, **headers: str) -> ClientId:
    return asyncio.run(identities.identify(_scope(address, **headers)))


def test_a_header_id_is_a_hint_inside_its_address() -> None:
    identities = ClientIdentities()
    plain = _identify(identities, "10.0.0.5")
    hinted = _identify(identities, "10.0.0.5", x_convscope_client="tab-1")
    other = _identify(identities, "10.0.0.6", x_convscope_client="tab-1")
    assert plain == ClientId("10.0.0.5", "10.0.0.5")
    assert hinted.group == "10.0.0.5" and hinted.member != plain.member and hinted.group_scale == 1
    assert other.group == "10.0.0.6" and other.member != hinted.member
    assert _identify(identities, "10.0.0.5", x_convscope_client="bad id\x7f").member == "10.0.0.5"


def test_a_live_sessions_student_gets_a_share_of_the_session_and_a_dead_one_nothing() -> None:
    asked: list[str] = []

    async def live(code: str) -> bool:
        asked.append(code)
        return code == "K7XQ2M"

    identities = ClientIdentities(live, session_scale=8)
    student = _identify(identities, "10.0.0.5", x_convscope_session="k7xq2m", x_convscope_student="s" * 12)
    assert student.group == "session:K7XQ2M" and student.group_scale == 8
    assert student.member.endswith("/" + "s" * 12)
    again = _identify(identities, "10.0.0.9", x_convscope_session="K7XQ2M", x_convscope_student="t" * 12)
    assert again.group == student.group and again.member != student.member
    stolen = _identify(identities, "10.0.0.9", x_convscope_session="K7XQ2M", x_convscope_student="s" * 12)
    assert stolen.member != student.member  # another machine using a student's id does not spend its share
    assert asked == ["K7XQ2M"]  # remembered for a few seconds: one lookup for the whole class
    ended = _identify(identities, "10.0.0.5", x_convscope_session="K7XQ2N", x_convscope_student="s" * 12)
    assert ended == ClientId.of("10.0.0.5")  # a code that is no live session is only an address
    short = _identify(identities, "10.0.0.5", x_convscope_session="K7XQ2M", x_convscope_student="s")
    assert short == ClientId.of("10.0.0.5")


def test_shares_bound_the_member_and_its_group() -> None:
    shares = Shares(per_client=2)
    tab1, tab2 = ClientId("10.0.0.5", "10.0.0.5/a"), ClientId("10.0.0.5", "10.0.0.5/b")
    shares.take(tab1)
    shares.take(tab2)
    assert "network address" in (shares.refusal(ClientId("10.0.0.5", "10.0.0.5/c")) or "")
    assert shares.refusal(ClientId.of("10.0.0.6")) is None
    students = [ClientId("session:C", f"session:C/{i}", 3) for i in range(4)]
    for s in students[:3]:
        shares.take(s)
        shares.take(s)
        assert "2 computations" in (shares.refusal(s) or "")
    assert "class session" in (shares.refusal(students[3]) or "")  # 3 shares of 2 places: the session is full
    for s in (tab1, tab2, *students[:3], *students[:3]):
        shares.release(s)
    assert len(shares) == 0 and shares.held_by_group("session:C") == 0


def test_heavy_pool_refuses_a_made_up_id_of_a_full_address_and_queues_another_address() -> None:
    pool = WorkLimiter(max_active=1, max_waiting=8, per_client=2, name="long computations")
    release = threading.Event()
    with ExitStack() as held:
        for tab in ("tab0", "tab1"):  # one runs, one waits
            held.enter_context(_held(pool, ClientId("10.0.0.5", f"10.0.0.5/{tab}"), release))
        with pytest.raises(ApiError) as refused:
            with pool.admit(client=ClientId("10.0.0.5", "10.0.0.5/tab-made-up")):
                pass
        assert refused.value.status == 429 and "Retry-After" in refused.value.headers
        held.enter_context(_held(pool, ClientId.of("10.0.0.6"), release))
        assert pool.held_by("10.0.0.6") == 1 and pool.waiting == 2  # queued, not refused
    assert pool.active == 0 and pool.waiting == 0 and len(pool.shares) == 0


def test_background_jobs_give_each_client_its_own_share() -> None:
    jobs = BackgroundJobs(max_queue=8, per_client=2)
    release = threading.Event()

    def slow(job) -> None:  # noqa: ANN001
        release.wait(10)

    greedy = ClientId.of("10.0.0.5")
    with bound(current_token(), greedy):
        jobs.submit("a", slow)
        jobs.submit("b", slow)
        assert jobs.submit("a", slow).client == greedy  # the same job again: no new place
        with pytest.raises(ApiError) as refused:
            jobs.submit("c", slow)
    assert refused.value.status == 429 and refused.value.code == "too_many_jobs"
    with bound(current_token(), ClientId("10.0.0.5", "10.0.0.5/other-tab")), pytest.raises(ApiError):
        jobs.submit("d", slow)  # a made-up id of the same address shares its places
    with bound(current_token(), ClientId.of("10.0.0.6")):
        assert jobs.submit("e", slow).state == "queued"  # someone else's job still gets its place
    release.set()
    jobs.close()


def test_the_app_answers_429_to_the_client_past_its_share_only(tmp_path) -> None:
    """Through the real app: a heavy request or a feature visualisation from an address past its share is
    429 (a made-up header id does not help), while another address's is accepted."""
    settings = Settings(storage_dir=tmp_path / "images", channel_jobs_per_client=1, feature_vis_steps=100_000)
    app = create_app(settings)
    url = "/api/models/lenet5/layers/features.3/channels/{}/feature-vis"
    with TestClient(app, client=("10.0.0.5", 5000)) as greedy:
        other = TestClient(app, client=("10.0.0.6", 5000))
        # the heavy pool: the address already holds its share (one running, one waiting) → 429
        heavy: WorkLimiter = app.state.heavy_limiter
        image_id = greedy.post("/api/images", files={"file": ("x.png", png_bytes(
            np.full((28, 28), 50, dtype=np.uint8)), "image/png")}).json()["image_id"]
        release = threading.Event()
        with ExitStack() as held:
            for tab in ("a", "b"):
                held.enter_context(_held(heavy, ClientId("10.0.0.5", f"10.0.0.5/{tab}"), release))
            r = greedy.get(f"/api/models/lenet5/images/{image_id}/saliency.npy",
                           params={"method": "scorecam"}, headers={"X-ConvScope-Client": "c"})
            assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_requests"
            assert r.headers["retry-after"].isdigit()
        assert other.get(f"/api/models/lenet5/images/{image_id}/saliency.npy",
                         params={"method": "scorecam"}).status_code == 200
        # the background-job queue
        try:
            assert greedy.post(url.format(0)).status_code == 202
            refused = greedy.post(url.format(1), headers={"X-ConvScope-Client": "another-tab"})
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "too_many_jobs" and refused.headers["retry-after"].isdigit()
            assert other.post(url.format(1)).status_code == 202
        finally:
            for channel in (0, 1):
                greedy.delete(url.format(channel))


def test_the_cheap_pool_answers_429_past_a_share_and_still_serves_another_client(tmp_path) -> None:
    """The class mix filled the cheap pool's queue with feature maps and the teacher's prediction heard 503.
    Through the real app: an address holding its cheap share is told 429 (another tab id does not help),
    and another address's prediction is computed meanwhile."""
    app = create_app(Settings(storage_dir=tmp_path / "images", max_active_work=1, cheap_work_per_client=2))
    with TestClient(app, client=("10.0.0.5", 5000)) as greedy:
        teacher = TestClient(app, client=("10.0.0.7", 5000))
        image_id = greedy.post("/api/images", files={"file": ("x.png", png_bytes(
            np.full((28, 28), 50, dtype=np.uint8)), "image/png")}).json()["image_id"]
        url = f"/api/models/lenet5/images/{image_id}/predictions"
        cheap: WorkLimiter = app.state.limiter
        release = threading.Event()
        with ExitStack() as held:
            for tab in ("a", "b"):  # one runs (the only slot), one waits
                held.enter_context(_held(cheap, ClientId("10.0.0.5", f"10.0.0.5/{tab}"), release))
            r = greedy.get(url, headers={"X-ConvScope-Client": "c"})
            assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_requests", r.text
            assert "model work" in r.json()["error"]["message"] and r.headers["retry-after"].isdigit()
            answer: dict = {}
            asking = threading.Thread(target=lambda: answer.update(r=teacher.get(url)))
            asking.start()  # queued behind the held slot, not refused
            wait_until(lambda: cheap.held_by("10.0.0.7") == 1, 10, "the teacher's prediction to queue")
        asking.join(30)
        assert answer["r"].status_code == 200 and len(answer["r"].json()["predictions"]) > 0
        assert cheap.active == 0 and cheap.waiting == 0 and len(cheap.shares) == 0


def test_a_full_queue_gives_a_client_holding_little_the_place_of_one_holding_most() -> None:
    """Ten clients with many requests each fill the queue; the teacher asking one thing at a time still gets
    a place: the newest request of the client holding most places is pushed out (503), nobody else's."""
    pool = WorkLimiter(max_active=1, max_waiting=3, wait_timeout_s=30, per_client=4)
    release = threading.Event()
    heard: dict[str, int | str] = {}

    def ask(who: ClientId, name: str) -> None:
        try:
            with pool.admit(client=who):
                heard[name] = "ran"
                release.wait(30)
        except ApiError as refused:
            heard[name] = refused.status

    greedy, modest, teacher = ClientId.of("10.0.0.5"), ClientId.of("10.0.0.6"), ClientId.of("10.0.0.7")
    threads = []
    for name, who in (("g1", greedy), ("g2", greedy), ("g3", greedy), ("m1", modest)):  # g1 runs; 3 wait
        threads.append(threading.Thread(target=ask, args=(who, name)))
        threads[-1].start()
        wait_until(lambda n=len(threads): pool.active + pool.waiting == n, 10, f"{name} to hold a place")
    threads.append(threading.Thread(target=ask, args=(teacher, "t")))
    threads[-1].start()
    wait_until(lambda: heard.get("g3") == 503, 10, "the greedy client's newest request to be pushed out")
    assert pool.held_by("10.0.0.7") == 1 and pool.waiting == 3 and "g2" not in heard and "m1" not in heard
    release.set()
    for thread in threads:
        thread.join(30)
    assert heard == {"g1": "ran", "g2": "ran", "g3": 503, "m1": "ran", "t": "ran"}
    assert pool.active == 0 and pool.waiting == 0 and len(pool.shares) == 0


def test_a_freed_slot_goes_to_the_client_holding_least_not_to_the_oldest_request() -> None:
    """The class mix: ten clients queue feature maps (many places each, none running: two slots, forty
    clients), then the teacher asks for one prediction. The teacher's request is the newest, but its client
    holds the fewest places, so it gets the next free slot (it waited 15 s behind them, first come first
    served among groups running nothing)."""
    pool = WorkLimiter(max_active=1, max_waiting=16, wait_timeout_s=30, per_client=4)
    order: list[str] = []
    gate = threading.Event()

    def ask(who: ClientId, name: str) -> None:
        with pool.admit(client=who):
            order.append(name)
            if name != "blocker":
                return
            gate.wait(30)

    blocker = threading.Thread(target=ask, args=(ClientId.of("10.0.0.1"), "blocker"))
    blocker.start()
    wait_until(lambda: pool.active == 1, 10, "the blocker to run")
    threads = []
    for n in range(3):
        for k in range(3):  # three clients, three waiting requests each, all older than the teacher's
            threads.append(threading.Thread(target=ask, args=(ClientId.of(f"10.0.1.{n}"), f"maps-{n}-{k}")))
            threads[-1].start()
            wait_until(lambda c=len(threads): pool.waiting == c, 10, "the feature maps to queue")
    threads.append(threading.Thread(target=ask, args=(ClientId.of("10.0.0.7"), "teacher")))
    threads[-1].start()
    wait_until(lambda: pool.waiting == 10, 10, "the teacher's request to queue")
    gate.set()
    for thread in (blocker, *threads):
        thread.join(30)
    assert order[:2] == ["blocker", "teacher"], order
    assert pool.active == 0 and pool.waiting == 0 and len(pool.shares) == 0


def test_among_clients_holding_as_much_the_one_that_computed_least_lately_goes_first() -> None:
    """A page whose feature maps held the slot for a while, and a teacher who asked one quick prediction:
    each now waits with one request, the page's older. The teacher's goes first; the use is forgotten with
    time and the table stays bounded."""
    pool = WorkLimiter(max_active=1, max_waiting=8, wait_timeout_s=30, per_client=4)
    now = time.monotonic()
    pool.recent.add("10.0.1.1", 3.0, now)  # the page's feature maps, lately
    pool.recent.add("10.0.0.7", 0.005, now)  # the teacher's last prediction
    order: list[str] = []
    gate = threading.Event()

    def ask(who: str, name: str) -> None:
        with pool.admit(client=ClientId.of(who)):
            order.append(name)
            if name == "blocker":
                gate.wait(30)

    threads = [threading.Thread(target=ask, args=(who, name)) for who, name in
               (("10.9.9.9", "blocker"), ("10.0.1.1", "page"), ("10.0.0.7", "teacher"))]
    for n, thread in enumerate(threads):
        thread.start()
        wait_until(lambda n=n: pool.active + pool.waiting == n + 1, 10, "the request to hold its place")
    gate.set()
    for thread in threads:
        thread.join(30)
    assert order == ["blocker", "teacher", "page"]
    assert pool.recent.of("10.0.1.1", now + 10 * pool.recent.half_life_s) < 0.01
    small = RecentUse(max_groups=4)
    for n in range(9):
        small.add(f"10.0.2.{n}", float(n), now)
    assert len(small) <= 4 and small.of("10.0.2.8", now) == 8.0


def test_every_answer_says_where_its_time_went(tmp_path) -> None:
    """The Server-Timing header: a prediction's answer names its queue wait and its computation, and the
    whole time in the app; a request that does no model work only the latter."""
    with TestClient(create_app(Settings(storage_dir=tmp_path / "images"))) as client:
        image_id = client.post("/api/images", files={"file": ("x.png", png_bytes(
            np.full((28, 28), 50, dtype=np.uint8)), "image/png")}).json()["image_id"]
        r = client.get(f"/api/models/lenet5/images/{image_id}/predictions")
        phases = dict(part.strip().split(";dur=") for part in r.headers["server-timing"].split(","))
        assert {"queue", "work", "app"} <= set(phases) and all(float(v) >= 0 for v in phases.values())
        assert float(phases["work"]) <= float(phases["app"])
        health = client.get("/api/health").headers["server-timing"]
        assert health.startswith("app;dur=") and "queue" not in health


def test_quick_work_takes_an_express_slot_while_slow_work_holds_every_other() -> None:
    """Cheap work is not preempted: a LeNet prediction (milliseconds) waited for a ResNet capture holding the
    slot to end. Quick work may take an express slot beside the others; other work may not, and a second
    quick request waits for whichever slot frees first."""
    pool = WorkLimiter(max_active=1, max_waiting=8, wait_timeout_s=30, per_client=4, express=1)
    order: list[str] = []
    gates = {name: threading.Event() for name in ("slow", "quick-1")}

    def ask(who: str, name: str, quick: bool) -> None:
        with pool.admit(client=ClientId.of(who), quick=quick):
            order.append(name)
            if name in gates:
                gates[name].wait(30)

    def start(who: str, name: str, quick: bool) -> threading.Thread:
        thread = threading.Thread(target=ask, args=(who, name, quick))
        thread.start()
        return thread

    threads = [start("10.0.1.1", "slow", False)]
    wait_until(lambda: order == ["slow"], 10, "the slow work to run")
    threads.append(start("10.0.1.2", "other-slow", False))
    wait_until(lambda: pool.waiting == 1, 10, "other slow work to queue")
    threads.append(start("10.0.0.7", "quick-1", True))
    wait_until(lambda: order == ["slow", "quick-1"] and pool.active == 2, 10, "the quick work to run at once")
    threads.append(start("10.0.0.8", "quick-2", True))
    wait_until(lambda: pool.waiting == 2, 10, "a second quick request to queue (the express slot is taken)")
    gates["quick-1"].set()
    wait_until(lambda: "quick-2" in order, 10, "the second quick request to take the express slot")
    assert order == ["slow", "quick-1", "quick-2"] and pool.waiting == 1  # the slow one still waits for its slot
    gates["slow"].set()
    for thread in threads:
        thread.join(30)
    assert order[-1] == "other-slow" and pool.active == 0 and pool.waiting == 0 and len(pool.shares) == 0


def test_the_running_app_keeps_its_start_up_objects_out_of_the_collectors_walks(tmp_path) -> None:
    """A full garbage collection walked ~500,000 start-up objects holding the GIL (0.3 s: /api/health
    waited behind it under the class mix). While the app runs they are frozen, and a full collection walks
    only what requests made; when it stops they are handed back."""
    import gc

    with TestClient(create_app(Settings(storage_dir=tmp_path / "images"))) as client:
        assert client.get("/api/health").status_code == 200
        frozen = gc.get_freeze_count()
        assert frozen > 100_000, frozen  # torch's and the app's modules, functions, classes
        assert len(gc.get_objects(generation=2)) < frozen / 2
    assert gc.get_freeze_count() == 0


def test_the_survivors_of_a_slow_full_collection_are_frozen_too() -> None:
    """Modules imported on first use (timm: ~47,000 objects) made full collections take 92-115 ms under the
    class mix; the survivors of a collection slower than the threshold leave the walks (threshold 0 here)."""
    import gc

    from server.services.memory.collector import startup_frozen

    with startup_frozen(slow_ms=0) as refreezer:
        frozen = gc.get_freeze_count()
        long_lived = [[i] for i in range(50_000)]  # what a lazily imported module brings
        gc.collect()
        assert refreezer.freezes >= 1
        assert gc.get_freeze_count() >= frozen + len(long_lived)
        assert len(gc.get_objects(generation=2)) < len(long_lived) / 10
    assert gc.get_freeze_count() == 0 and gc.callbacks.count(refreezer) == 0


class _held:
    """A place held in ``pool`` by ``client`` from its own thread (running, or waiting for a slot) until
    the release event is set; all holders share one release, so a waiting one never outlives a running one."""

    def __init__(self, pool: WorkLimiter, client: ClientId, release: threading.Event) -> None:
        self.pool, self.client, self.release = pool, client, release
        self.thread = threading.Thread(target=self._hold)

    def _hold(self) -> None:
        with self.pool.admit(client=self.client):
            self.release.wait(30)

    def __enter__(self) -> None:
        self.thread.start()
        wait_until(lambda: self.pool.held_by(self.client) > 0, 10, f"{self.client} to hold a place")

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(30)
