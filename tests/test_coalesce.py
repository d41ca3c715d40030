"""Identical GETs in flight at once share one answer (server/middleware/coalesce.py): at the ASGI level against an app
that answers when the test says so, then over a real uvicorn with ten identical uncached Score-CAM requests."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx
import numpy as np
import pytest

from server.main import create_app
from server.middleware.coalesce import CoalesceIdenticalGets, SharedAnswers
from server.settings import Settings
from tests.conftest import png_bytes
from tests.harness import serving

PATH = "/api/models/m/images/i/saliency.npy"


class HeldApp:
    """Answers each request when ``release`` is set: ``status`` and ``chunks`` (one body message each);
    records how many requests reached it and whether one of them heard its client leave."""

    def __init__(self, status: int = 200, chunks: tuple[bytes, ...] = (b"answer",), fail: bool = False) -> None:
        self.status, self.chunks, self.fail = status, chunks, fail
        self.calls = 0
        self.release = asyncio.Event()
        self.heard_disconnect = asyncio.Event()

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        self.calls += 1
        assert (await receive())["type"] == "http.request"

        async def listen() -> None:
            if (await receive())["type"] == "http.disconnect":
                self.heard_disconnect.set()

        listener = asyncio.ensure_future(listen())
        try:
            await self.release.wait()
            if self.fail:
                raise RuntimeError("the endpoint broke")
            await send({"type": "http.response.start", "status": self.status,
                        "headers": [(b"content-type", b"application/octet-stream"), (b"x-call", str(self.calls).encode())]})
            for k, chunk in enumerate(self.chunks):
                await send({"type": "http.response.body", "body": chunk, "more_body": k < len(self.chunks) - 1})
        finally:
            listener.cancel()


class Client:
    """One connection's side of the ASGI conversation: its request, what it was sent, and a way to leave."""

    def __init__(self, path: str = PATH, query: bytes = b"method=gradcam", method: str = "GET",
                 headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        self.scope = {"type": "http", "method": method, "path": path, "query_string": query, "headers": list(headers)}
        self.incoming: asyncio.Queue = asyncio.Queue()
        self.incoming.put_nowait({"type": "http.request", "body": b"", "more_body": False})
        self.sent: list[dict] = []

    async def receive(self) -> dict:
        return await self.incoming.get()

    async def send(self, message: dict) -> None:
        self.sent.append(message)

    def leave(self) -> None:
        self.incoming.put_nowait({"type": "http.disconnect"})

    @property
    def status(self) -> int | None:
        return next((m["status"] for m in self.sent if m["type"] == "http.response.start"), None)

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


def middleware(app: HeldApp, max_body: int = 1 << 20) -> tuple[CoalesceIdenticalGets, SharedAnswers]:
    answers = SharedAnswers(max_body=max_body)
    return CoalesceIdenticalGets(app, answers, prefixes=("/api/models",)), answers


async def until(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(10):
        while not condition():
            await asyncio.sleep(0.001)


async def run_all(mw: CoalesceIdenticalGets, clients: list[Client]) -> list[asyncio.Task]:
    return [asyncio.ensure_future(mw(c.scope, c.receive, c.send)) for c in clients]


def test_identical_gets_in_flight_share_one_answer() -> None:
    async def scenario() -> None:
        app = HeldApp()
        mw, answers = middleware(app)
        clients = [Client() for _ in range(10)]
        tasks = await run_all(mw, clients)
        await until(lambda: answers.waiting == 9)
        assert app.calls == 1
        app.release.set()
        await asyncio.gather(*tasks)
        assert app.calls == 1 and answers.stats.copied == 9 and answers.stats.led == 1
        assert {(c.status, c.body) for c in clients} == {(200, b"answer")}
        assert all(dict(c.sent[0]["headers"])[b"x-call"] == b"1" for c in clients)
        assert answers.flights == {} and answers.waiting == 0
        # Nothing is kept: the next identical request runs again.
        later = Client()
        await mw(later.scope, later.receive, later.send)
        assert app.calls == 2 and later.body == b"answer"

    asyncio.run(scenario())


@pytest.mark.parametrize("other", [
    Client(query=b"method=scorecam"),
    Client(path="/api/models/m/images/j/saliency.npy"),
    Client(headers=((b"origin", b"http://other.example"),)),
    Client(headers=((b"range", b"bytes=0-1"),)),
    Client(method="POST"),
    Client(path="/api/sessions/ABCD"),  # not under the shared prefixes (per-client answers)
], ids=["query", "path", "origin", "range", "post", "outside-prefixes"])
def test_requests_that_differ_are_not_shared(other: Client) -> None:
    async def scenario() -> None:
        app = HeldApp()
        mw, answers = middleware(app)
        tasks = await run_all(mw, [Client(), other])
        await until(lambda: app.calls == 2)
        assert answers.waiting == 0
        app.release.set()
        await asyncio.gather(*tasks)
        assert other.body == b"answer" and answers.stats.copied == 0

    asyncio.run(scenario())


@pytest.mark.parametrize("app_kwargs", [
    {"status": 404},  # an error (or a refusal meant for the leader's client: 429)
    {"chunks": (b"part one, ", b"part two")},  # a streamed answer
    {"chunks": (b"x" * 2048,)},  # over max_body
], ids=["error", "streamed", "too-large"])
def test_answers_that_cannot_be_copied_make_each_follower_run_itself(app_kwargs: dict) -> None:
    async def scenario() -> None:
        app = HeldApp(**app_kwargs)
        mw, answers = middleware(app, max_body=1024)
        clients = [Client() for _ in range(4)]
        tasks = await run_all(mw, clients)
        await until(lambda: answers.waiting == 3)
        app.release.set()
        await asyncio.gather(*tasks)
        assert app.calls == 4 and answers.stats.ran_alone == 3 and answers.stats.copied == 0
        assert len({(c.status, c.body) for c in clients}) == 1 and clients[0].status == app.status
        assert answers.flights == {} and answers.waiting == 0

    asyncio.run(scenario())


def test_a_leader_that_breaks_leaves_its_followers_to_run_themselves() -> None:
    async def scenario() -> None:
        app = HeldApp(fail=True)
        mw, answers = middleware(app)
        clients = [Client() for _ in range(3)]
        tasks = await run_all(mw, clients)
        await until(lambda: answers.waiting == 2)
        app.release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)  # each ran (and broke) itself
        assert app.calls == 3 and answers.flights == {} and answers.waiting == 0

    asyncio.run(scenario())


def test_the_work_goes_on_while_a_follower_still_waits() -> None:
    async def scenario() -> None:
        app = HeldApp()
        mw, answers = middleware(app)
        leader, follower = Client(), Client()
        tasks = await run_all(mw, [leader, follower])
        await until(lambda: answers.waiting == 1)
        (flight,) = answers.flights.values()
        leader.leave()
        await until(lambda: flight.leader_gone)  # the middleware has read the leader's disconnect…
        assert not flight.all_gone.is_set() and not app.heard_disconnect.is_set()  # …and kept it: one client still wants the answer
        app.release.set()
        await asyncio.gather(*tasks)
        assert follower.status == 200 and follower.body == b"answer"

    asyncio.run(scenario())


def test_the_work_hears_the_disconnect_once_every_client_has_gone() -> None:
    async def scenario() -> None:
        app = HeldApp()
        mw, answers = middleware(app)
        leader, followers = Client(), [Client(), Client()]
        tasks = await run_all(mw, [leader, *followers])
        await until(lambda: answers.waiting == 2)
        (flight,) = answers.flights.values()
        followers[0].leave()
        leader.leave()
        await until(lambda: flight.leader_gone and flight.listening == 1)  # both departures were read…
        assert not flight.all_gone.is_set() and not app.heard_disconnect.is_set()  # …and the work still goes on
        followers[1].leave()
        await until(app.heard_disconnect.is_set)  # now the endpoint's work is cancelled
        # A request that comes now starts afresh instead of joining a flight that is being cancelled.
        late = Client()
        late_task = asyncio.ensure_future(mw(late.scope, late.receive, late.send))
        await until(lambda: app.calls == 2)
        app.release.set()
        await asyncio.gather(*tasks, late_task)
        assert late.body == b"answer" and answers.flights == {} and answers.waiting == 0

    asyncio.run(scenario())


def test_a_follower_whose_client_left_is_sent_nothing() -> None:
    async def scenario() -> None:
        app = HeldApp()
        mw, answers = middleware(app)
        leader, follower = Client(), Client()
        tasks = await run_all(mw, [leader, follower])
        await until(lambda: answers.waiting == 1)
        follower.leave()
        app.release.set()
        await asyncio.gather(*tasks)
        assert follower.sent == [] and leader.body == b"answer" and app.calls == 1

    asyncio.run(scenario())


# --- over a real uvicorn ------------------------------------------------------------------------------------

def test_ten_identical_uncached_requests_run_one_computation(tmp_path: Path) -> None:
    """What a class does when the teacher shares an image: ten identical requests at once for a result nobody
    has computed yet (Score-CAM: 16 masked passes). One computation runs; every client gets the same bytes,
    with the headers each answer carries (weights, ETag, security headers); a HEAD among them gets the head."""
    app = create_app(Settings(storage_dir=tmp_path / "images"))
    with serving(app) as port:
        base = f"http://127.0.0.1:{port}"
        image = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        image_id = httpx.post(f"{base}/api/images", files={"file": ("a.png", png_bytes(image))}).json()["image_id"]
        url = f"/api/models/tinyvgg-shapes/images/{image_id}/saliency.npy?method=scorecam&weights=untrained"

        async def together() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=base, timeout=120) as client:
                return await asyncio.gather(*(client.request("HEAD" if k == 9 else "GET", url) for k in range(10)))

        answers = asyncio.run(together())
    gets, head = answers[:9], answers[9]
    assert [a.status_code for a in answers] == [200] * 10
    assert len({a.content for a in gets}) == 1 and np.load(io.BytesIO(gets[0].content)).shape == (64, 64)
    for a in answers:
        assert a.headers["x-convscope-weights"] == "untrained" and a.headers["etag"] == gets[0].headers["etag"]
        assert a.headers["x-content-type-options"] == "nosniff" and "content-security-policy" in a.headers
    assert head.content == b"" and head.headers["content-length"] == gets[0].headers["content-length"]
    cache, shared = app.state.saliency_maps.cache, app.state.shared_answers
    assert cache.stats.computations == 1, "ten identical requests ran more than one computation"
    # each request either waited for the first one's answer, waited in the cache's flight, or found the result
    assert shared.stats.copied + cache.stats.shared + cache.stats.hits >= 9
    assert shared.flights == {} and shared.waiting == 0


def test_a_copy_is_not_changed_by_what_outer_middlewares_do_to_another() -> None:
    """Starlette's CORS middleware adds headers to the message it is given, in place: each follower must be
    sent its own copy of the leader's head."""
    async def scenario() -> None:
        app = HeldApp()
        mw, answers = middleware(app)

        def mutating(client: Client):  # noqa: ANN202
            async def send(message: dict) -> None:
                if message["type"] == "http.response.start":
                    message["headers"].append((b"x-added", b"1"))
                await client.send(message)
            return send

        clients = [Client() for _ in range(3)]
        tasks = [asyncio.ensure_future(mw(c.scope, c.receive, mutating(c))) for c in clients]
        await until(lambda: answers.waiting == 2)
        app.release.set()
        await asyncio.gather(*tasks)
        for c in clients:
            assert [name for name, _ in c.sent[0]["headers"]].count(b"x-added") == 1

    asyncio.run(scenario())
