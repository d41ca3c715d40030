"""Fairness under a burst of heavy work, against a real uvicorn (127.0.0.1 only, bounded, stopped by pid).

In one run:
  idle    cheap requests on an idle server: LeNet predictions of fresh images (a real forward each) and
          /api/health, one after another;
  burst   the same cheap requests while heavy work (Score-CAM on ResNet-18, ~10 s or more each on a CPU)
          saturates the heavy pool and a burst of 100 more heavy requests from 20 clients arrives;
  stop    SIGTERM with heavy work in flight: seconds until the process is gone.
It prints p50 / p95 / max of each, the ratio burst p95 ÷ idle p95, the cheap failures, and what the heavy
requests heard (200 / 429 / 503 and their Retry-After). Goals: cheap p95 ≤ 3× idle, 0 cheap failures,
health always < 100 ms.

``--scenario class-mix`` (issue 21) replaces the burst by what a class sends at once, each client from
its own loopback address (127.0.0.N, as distinct machines are): 2 Score-CAM/occlusion requests that are
abandoned after a second, 120 feature-map requests (ResNet-18 atlases of distinct images) from 10
clients, 10 feature-visualisation jobs from 10 clients, and 30 students each uploading their own digit and
asking for its feature maps. The teacher's cheap requests (LeNet-5 predictions of fresh uploads, health)
run idle first, then during the mix, in the same run. Goals: health max < 100 ms, cheap p95 ≤ 3× idle,
0 cheap failures (a 429 to a client past its own share is no failure of the others).

How it measures: health is timed on a thread of this process (each check on its own, through
``asyncio.to_thread``, so this process's event loop, which drives 150 clients and wakes up late, is not in
the figure) and, for the goal, from a process of its own; the slowest predictions are printed with the
server's ``Server-Timing`` header (queue: waiting for a slot, work: computing, batch: waiting in the
prediction batcher, app: the whole time in the app), which says where they waited; refusals are
counted with their reason (queue full, waited too long, pushed out, past the client's share).

Run: .venv/bin/python bench/bench_fairness.py [--repo PATH] [--cheap 60] [--burst 100] [--scenario class-mix]
(``--repo`` serves another checkout, e.g. main's code for the "before" figures.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from harness import free_port  # the one free_port (bench/harness.py → tests/harness.py)
from PIL import Image

HEAVY = "/api/models/resnet18/images/{}/saliency.npy"
HEAVY_PARAMS = {"method": "scorecam", "weights": "untrained"}
CHEAP = "/api/models/lenet5/images/{}/predictions"
START_TIMEOUT_S = 300  # a loaded 2-core machine can take minutes to import torch and load the models


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def start_server(repo: Path, storage: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "CONVSCOPE_STORAGE_DIR": str(storage), "PYTHONPATH": str(repo),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    # the server's log goes to a file next to its storage: a pipe nobody reads would block the server once full
    log = (storage.parent / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "server.main:create_app", "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=log,
    )
    log.close()
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited: " + (storage.parent / "server.log").read_text()[-2000:])
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the server did not start in {START_TIMEOUT_S} s")


def stop_server(proc: subprocess.Popen, timeout: float = 60.0) -> float:
    """SIGTERM by pid; seconds until it exited (SIGKILL after ``timeout``)."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        return float("inf")
    return time.monotonic() - started


def percentiles(values: list[float]) -> str:
    if not values:
        return "no samples"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return (f"p50 {1000 * statistics.median(ordered):7.1f} ms  p95 {1000 * p95:7.1f} ms  "
            f"max {1000 * ordered[-1]:7.1f} ms  (n={len(ordered)})")


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def timed_health(client: httpx.Client) -> tuple[float, str | None]:
    """One /api/health, timed where it is sent: called on a thread of its own (``asyncio.to_thread``), so the
    figure is not this benchmark's event loop waking up late (it drives 150 clients)."""
    start = time.perf_counter()
    try:
        r = client.get("/api/health", timeout=30)
        failure = None if r.status_code == 200 else f"health {r.status_code}"
    except httpx.HTTPError as exc:
        failure = f"health {type(exc).__name__}"
    return time.perf_counter() - start, failure


async def cheap_round(client: httpx.AsyncClient, health_client: httpx.Client, image_ids: list[str], gap_s: float
                      ) -> tuple[list[float], list[float], list[str], list[str]]:
    """One cheap prediction per fresh image and one health check after each (on a thread: :func:`timed_health`),
    one at a time; also each prediction's Server-Timing (where the server says its time went)."""
    preds, health, failures, phases = [], [], [], []
    for image_id in image_ids:
        start = time.perf_counter()
        try:
            r = await client.get(CHEAP.format(image_id), timeout=30)
            phases.append(r.headers.get("server-timing", ""))
            if r.status_code != 200:
                failures.append(f"predictions {r.status_code}")
        except httpx.HTTPError as exc:
            failures.append(f"predictions {type(exc).__name__}")
            phases.append("")
        preds.append(time.perf_counter() - start)
        seconds, failure = await asyncio.to_thread(timed_health, health_client)
        health.append(seconds)
        if failure:
            failures.append(failure)
        await asyncio.sleep(gap_s)
    return preds, health, failures, phases


def slowest(seconds: list[float], phases: list[str], n: int = 5) -> str:
    """The ``n`` slowest requests: client-side time and the server's Server-Timing for each."""
    ranked = sorted(zip(seconds, phases), reverse=True)[:n]
    return "\n".join(f"    {1000 * s:8.1f} ms  server: {p or '(none)'}" for s, p in ranked)


async def heavy(client: httpx.AsyncClient, image_id: str, who: str, answers: list[tuple[int, str | None]]) -> None:
    try:
        r = await client.get(HEAVY.format(image_id), params=HEAVY_PARAMS, headers={"X-ConvScope-Client": who},
                             timeout=600)
        answers.append((r.status_code, r.headers.get("retry-after")))
    except httpx.HTTPError as exc:
        answers.append((0, type(exc).__name__))


async def scenario(base: str, cheap_idle: list[str], cheap_busy: list[str], heavy_ids: list[str],
                   burst: int, gap_s: float, proc: subprocess.Popen) -> dict:
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=base, limits=limits))
        health = stack.enter_context(httpx.Client(base_url=base))  # timed on a thread (timed_health)
        idle = await cheap_round(client, health, cheap_idle, gap_s)
        answers: list[tuple[int, str | None]] = []
        # saturate: one long heavy run per pool slot and a few queued (distinct clients), then the burst
        first = [asyncio.create_task(heavy(client, heavy_ids[i], f"saturate-{i}", answers)) for i in range(4)]
        await asyncio.sleep(1.0)
        rest = [asyncio.create_task(heavy(client, heavy_ids[4 + i], f"student-{i % 20}", answers))
                for i in range(burst)]
        await asyncio.sleep(1.0)
        busy = await cheap_round(client, health, cheap_busy, gap_s)
        heard = list(answers)
        running = sum(1 for task in first + rest if not task.done())
        stopped_in = await asyncio.to_thread(stop_server, proc)  # SIGTERM with the heavy work in flight
        for task in first + rest:
            task.cancel()
        await asyncio.gather(*first, *rest, return_exceptions=True)
    return {"idle": idle, "busy": busy, "heavy_answers": heard, "stopped_in": stopped_in, "running": running}


def upload_noise(client: httpx.Client, rng: np.random.Generator, shape: tuple[int, ...], count: int) -> list[str]:
    """``count`` uploads of uniform noise pictures of ``shape``; their image ids."""
    ids = []
    for _ in range(count):
        r = client.post("/api/images", files={"file": ("x.png", png(rng.integers(0, 256, shape, dtype=np.uint8)),
                                                       "image/png")})
        r.raise_for_status()
        ids.append(r.json()["image_id"])
    return ids


def warm_up(client: httpx.Client, cheap_id: str) -> None:
    client.get(CHEAP.format(cheap_id)).raise_for_status()  # LeNet loaded
    client.get("/api/models/resnet18", params={"weights": "untrained"}).raise_for_status()


def loopback(n: int) -> str:
    """Loopback address 127.0.x.y (n = 256·x + y): a machine of its own."""
    return f"127.0.{n // 256}.{n % 256}"


def client_from(n: int, base: str, **kwargs: object) -> httpx.AsyncClient:
    """A client whose connections come from :func:`loopback` address ``n``."""
    return httpx.AsyncClient(base_url=base, transport=httpx.AsyncHTTPTransport(local_address=loopback(n)), **kwargs)


def refusal(r: httpx.Response) -> str:
    """Why a 429 / 503 was given, in a few words from its message ("" for other answers)."""
    if r.status_code not in (429, 503):
        return ""
    try:
        message = r.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return "?"
    for phrase in ("took the place", "queue full", "waited too long", "already have"):
        if phrase in message:
            return phrase
    return message[:30]


async def timed(client: httpx.AsyncClient, method: str, url: str, heard: list, **kwargs: object) -> None:
    start = time.perf_counter()
    try:
        r = await client.request(method, url, **kwargs)
        heard.append((r.status_code, time.perf_counter() - start, refusal(r)))
    except httpx.HTTPError as exc:
        heard.append((type(exc).__name__, time.perf_counter() - start, ""))


PROBE = """
import sys, time, httpx
times = []
with httpx.Client(base_url=sys.argv[1], timeout=30) as client:
    end = time.monotonic() + float(sys.argv[2])
    while time.monotonic() < end:
        start = time.perf_counter()
        client.get('/api/health').raise_for_status()
        times.append(time.perf_counter() - start)
        time.sleep(0.05)
print(' '.join(f'{t:.5f}' for t in times))
"""


async def loop_lag(until: asyncio.Event, lags: list[float]) -> None:
    """How late this benchmark's own event loop wakes (it drives 150 clients: its lateness is in every
    latency it measures)."""
    while not until.is_set():
        start = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append(time.perf_counter() - start - 0.01)


async def class_mix(base: str, cheap_idle: list[str], cheap_busy: list[str], maps: list[str],
                    heavy_ids: list[str], students: list[bytes], gap_s: float) -> dict:
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
    async with contextlib.AsyncExitStack() as stack:
        teacher = await stack.enter_async_context(httpx.AsyncClient(base_url=base, limits=limits))
        health = stack.enter_context(httpx.Client(base_url=base))  # timed on a thread (timed_health)
        idle = await cheap_round(teacher, health, cheap_idle, gap_s)
        heard: dict[str, list] = {"abandoned": [], "feature maps": [], "feature vis": [], "students": []}
        clients: list[httpx.AsyncClient] = []
        tasks = []

        def spawn(kind: str, n: int, method: str, url: str, **kwargs: object) -> None:
            client = client_from(n, base, timeout=kwargs.pop("timeout", 600))
            clients.append(client)
            tasks.append(asyncio.create_task(timed(client, method, url, heard[kind], **kwargs)))

        # two heavy requests whose clients give up after a second (their work must stop)
        spawn("abandoned", 2, "GET", HEAVY.format(heavy_ids[0]), params=HEAVY_PARAMS, timeout=1.0)
        spawn("abandoned", 3, "GET", HEAVY.format(heavy_ids[1]), params={"method": "occlusion", "weights": "untrained"},
              timeout=1.0)
        for i, image_id in enumerate(maps):  # 120 feature maps from 10 machines
            spawn("feature maps", 10 + i % 10, "GET", f"/api/models/resnet18/images/{image_id}/layers/layer1/atlas.png",
                  params={"weights": "untrained"})
        for i in range(10):  # 10 feature visualisations from 10 machines
            spawn("feature vis", 30 + i, "POST", f"/api/models/lenet5/layers/features.3/channels/{i}/feature-vis")

        async def student(n: int, picture: bytes) -> None:
            async with client_from(256 + n, base, timeout=600) as client:
                start = time.perf_counter()
                try:
                    r = await client.post("/api/images", files={"file": ("mine.png", picture, "image/png")})
                    if r.status_code == 201:
                        r = await client.get(f"/api/models/lenet5/images/{r.json()['image_id']}/layers/features.0/atlas.png")
                    heard["students"].append((r.status_code, time.perf_counter() - start, refusal(r)))
                except httpx.HTTPError as exc:
                    heard["students"].append((type(exc).__name__, time.perf_counter() - start, ""))

        tasks += [asyncio.create_task(student(n, picture)) for n, picture in enumerate(students, start=1)]
        await asyncio.sleep(0.5)
        # health also from a process of its own, which this loop's lateness cannot touch
        probe = await asyncio.create_subprocess_exec(sys.executable, "-c", PROBE, base, str(len(cheap_busy) * 0.15),
                                                     stdout=asyncio.subprocess.PIPE)
        done, lags = asyncio.Event(), []
        lagging = asyncio.create_task(loop_lag(done, lags))
        busy = await cheap_round(teacher, health, cheap_busy, gap_s)
        done.set()
        await lagging
        probed = [float(t) for t in (await probe.communicate())[0].split()]
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients:
            await client.aclose()
    return {"idle": idle, "busy": busy, "heard": heard, "probe": probed, "lag": lags}


def run_class_mix(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = start_server(args.repo.resolve(), Path(tmp) / "images", port)
        base = f"http://127.0.0.1:{port}"
        try:
            # each client uploads its own pictures, from its own address (one address's upload quota is a
            # class's worth, not the whole benchmark's)
            with httpx.Client(base_url=base, timeout=120) as client:
                cheap = upload_noise(client, rng, (28, 28), 2 * args.cheap + 1)
                warm_up(client, cheap[-1])
            own: dict[int, list[str]] = {}
            for n, shape, count in [*((10 + i, (96, 96, 3), 12) for i in range(10)), (2, (224, 224, 3), 1),
                                    (3, (224, 224, 3), 1)]:
                with httpx.Client(base_url=base, timeout=120, transport=httpx.HTTPTransport(
                        local_address=loopback(n))) as client:
                    own[n] = upload_noise(client, rng, shape, count)
            maps = [own[10 + i % 10][i // 10] for i in range(120)]  # the i-th map is asked by client 10 + i % 10
            heavy_ids = own[2] + own[3]
            students = [png(rng.integers(0, 256, (28, 28), dtype=np.uint8)) for _ in range(30)]
            load = os.getloadavg()
            result = asyncio.run(class_mix(base, cheap[: args.cheap], cheap[args.cheap: 2 * args.cheap], maps,
                                           heavy_ids, students, args.gap))
        finally:
            if proc.poll() is None:
                stop_server(proc)
    idle_p, idle_h, idle_fail, _ = result["idle"]
    busy_p, busy_h, busy_fail, busy_phases = result["busy"]
    print(f"server: {args.repo}   load average before the run: {load}, after: {os.getloadavg()}")
    print(f"idle  predictions  {percentiles(idle_p)}")
    print(f"idle  health       {percentiles(idle_h)}  (timed on a thread of this process)")
    print(f"mix   predictions  {percentiles(busy_p)}")
    print(f"mix   health       {percentiles(busy_h)}  (timed on a thread of this process)")
    print(f"mix   health from a process of its own  {percentiles(result['probe'])}")
    print(f"cheap p95 mix ÷ idle: {p95(busy_p) / p95(idle_p):.2f}× (goal ≤ 3×)   health max during the mix: "
          f"{1000 * max(result['probe']):.1f} ms from a process of its own, {1000 * max(busy_h):.1f} ms from a "
          f"thread of this one (goal < 100 ms; idle max {1000 * max(idle_h):.1f} ms)")
    print(f"cheap failures: idle {len(idle_fail)}, mix {len(busy_fail)} {sorted(set(busy_fail))[:5]} (goal 0)")
    print(f"slowest predictions during the mix (Server-Timing in ms):\n{slowest(busy_p, busy_phases)}")
    print(f"this benchmark's own event loop, lateness during the mix  {percentiles(result['lag'])}")
    for kind, answers in result["heard"].items():
        counts: dict[str, int] = {}
        for status, _, why in answers:
            key = f"{status} {why}" if why else str(status)
            counts[key] = counts.get(key, 0) + 1
        print(f"{kind:12s} heard {counts}  {percentiles([s for _, s, _ in answers])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--cheap", type=int, default=60, help="cheap requests per phase")
    parser.add_argument("--burst", type=int, default=100, help="heavy requests in the burst")
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between cheap requests")
    parser.add_argument("--scenario", choices=("burst", "class-mix"), default="burst")
    args = parser.parse_args()
    if args.scenario == "class-mix":
        run_class_mix(args)
        return
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = start_server(args.repo.resolve(), Path(tmp) / "images", port)
        base = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=base, timeout=120) as client:
                cheap = upload_noise(client, rng, (28, 28), 2 * args.cheap + 1)
                heavy_ids = upload_noise(client, rng, (224, 224, 3), args.burst + 4)
                warm_up(client, cheap[-1])
            result = asyncio.run(scenario(base, cheap[: args.cheap], cheap[args.cheap: 2 * args.cheap],
                                          heavy_ids, args.burst, args.gap, proc))
        finally:
            if proc.poll() is None:
                stop_server(proc)
    idle_p, idle_h, idle_fail, _ = result["idle"]
    busy_p, busy_h, busy_fail, busy_phases = result["busy"]
    print(f"server: {args.repo}")
    print(f"idle  predictions  {percentiles(idle_p)}")
    print(f"idle  health       {percentiles(idle_h)}")
    print(f"burst predictions  {percentiles(busy_p)}")
    print(f"burst health       {percentiles(busy_h)}")
    ratio = p95(busy_p) / p95(idle_p)
    print(f"cheap p95 burst ÷ idle: {ratio:.2f}× (goal ≤ 3×)   health max during burst: "
          f"{1000 * max(busy_h):.1f} ms (goal < 100 ms)")
    print(f"cheap failures: idle {len(idle_fail)}, burst {len(busy_fail)} {sorted(set(busy_fail))[:5]} (goal 0)")
    heard: dict[str, int] = {}
    retry: dict[str, set[str]] = {}
    for status, extra in result["heavy_answers"]:
        heard[str(status)] = heard.get(str(status), 0) + 1
        if extra:
            retry.setdefault(str(status), set()).add(extra)
    print(f"heavy answers during the burst: {heard}  Retry-After seen: "
          f"{ {k: sorted(v, key=lambda s: (len(s), s))[:6] for k, v in retry.items()} }")
    print(f"SIGTERM with {result['running']} heavy requests still open: stopped in {result['stopped_in']:.1f} s")


if __name__ == "__main__":
    main()
