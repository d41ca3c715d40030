"""Classroom benchmark: one session, 100 real SSE followers and 30 submissions, against a real uvicorn.

Starts ``uvicorn server.main:create_app`` on 127.0.0.1 (a free port, a temporary image store), creates a
session, then measures how long a teacher's state change takes to reach every follower (from the start of
the PUT to the moment each follower has read the event), twice:

1. the baseline: ONE follower, ``--changes`` state changes, nothing else going on;
2. the class: ``--followers`` followers on the same session, ``--changes`` state changes, while
   ``--submissions`` students each upload an image and send it to the wall (spread over the run, at most
   ``--duration`` seconds) and the teacher reloads the wall with its predictions after every fifth one.

It prints delivery latency p50 / p95 / max for both and their ratio, events lost, every status seen, and
the server's CPU (percent of one core, mean and peak, sampled by psutil) and resident memory. The followers
are raw asyncio sockets (no HTTP library) so the client costs the shared CPU as little as possible; it
still runs on the same machine, so latencies include the client's share. The server is stopped by its pid.

Run:  .venv/bin/python bench/bench_classroom.py [--followers 100] [--changes 40] [--submissions 30] [--redis]
(``--redis``: sessions in a local redis-server, so each change goes through Redis pub/sub.)
Goal (issue 13): every follower has every change within 1 s (max ≤ 1 s).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import psutil
from harness import live_server, start_redis  # the one harness (bench/harness.py → tests/harness.py)
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def digit_png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    arr = np.zeros((28, 28), np.uint8)
    y, x = rng.integers(6, 22, size=2)
    arr[max(0, y - 5): y + 5, max(0, x - 2): x + 2] = 255
    arr = np.maximum(arr, rng.integers(0, 40, (28, 28), dtype=np.uint8))
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


class Follower:
    """A raw SSE client: records when each event id arrives."""

    def __init__(self) -> None:
        self.seen: dict[int, float] = {}
        self.ready = asyncio.Event()
        self.status = 0

    async def run(self, port: int, code: str, stop: asyncio.Event) -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            writer.write(f"GET /api/sessions/{code}/events HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                         "Accept: text/event-stream\r\n\r\n".encode())
            await writer.drain()
            status_line = await reader.readline()
            self.status = int(status_line.split()[1])
            while (await reader.readline()) not in (b"\r\n", b""):
                pass  # headers
            while not stop.is_set():
                line = await reader.readline()
                if not line:
                    return
                if line.startswith(b"id: "):  # chunk-size lines never start so
                    self.seen[int(line[4:])] = time.perf_counter()
                    self.ready.set()
        finally:
            writer.close()


class Sampler:
    """The server's CPU and RSS every 0.25 s."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.cpu: list[float] = []
        self.rss: list[int] = []

    async def run(self, stop: asyncio.Event) -> None:
        self.process.cpu_percent(None)
        while not stop.is_set():
            await asyncio.sleep(0.25)
            self.cpu.append(self.process.cpu_percent(None))
            self.rss.append(self.process.memory_info().rss)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def one_round(port: int, n_followers: int, changes: int, submissions: int, duration: float,
                    pid: int) -> dict:
    statuses: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=60) as http:
        created = (await http.post("/api/sessions", json={"state": {"model": "lenet5", "view": "overview"}})).json()
        code, teacher = created["code"], {"Authorization": f"Bearer {created['teacher_token']}"}
        stop = asyncio.Event()
        followers = [Follower() for _ in range(n_followers)]
        tasks = [asyncio.create_task(f.run(port, code, stop)) for f in followers]
        await asyncio.wait_for(asyncio.gather(*(f.ready.wait() for f in followers)), 60)
        sampler = Sampler(pid)
        sampling = asyncio.create_task(sampler.run(stop))
        sent: dict[int, float] = {}

        async def teacher_changes() -> None:
            gap = duration / max(1, changes)
            for i in range(changes):
                state = {"model": "lenet5", "view": ("layers", "saliency", "stepper")[i % 3], "step": str(i)}
                t0 = time.perf_counter()
                response = await http.put(f"/api/sessions/{code}/state", json={"state": state}, headers=teacher)
                statuses[f"PUT {response.status_code}"] += 1
                sent[response.json()["version"]] = t0
                await asyncio.sleep(gap)

        async def students() -> None:
            gap = duration / max(1, submissions)
            for i in range(submissions):
                up = await http.post("/api/images", files={"file": (f"{i}.png", digit_png(i + 1000 * n_followers))})
                statuses[f"upload {up.status_code}"] += 1
                sub = await http.post(f"/api/sessions/{code}/submissions", json={"image_id": up.json()["image_id"]},
                                      headers={"X-ConvScope-Student": f"bench-student-{i:04d}"})
                statuses[f"submit {sub.status_code}"] += 1
                if i % 5 == 4:
                    wall = await http.get(f"/api/sessions/{code}/submissions", headers=teacher)
                    statuses[f"wall {wall.status_code}"] += 1
                await asyncio.sleep(gap)

        await asyncio.gather(teacher_changes(), students())
        await asyncio.sleep(1.5)  # let the last event reach everyone (or be counted as lost)
        stop.set()
        await http.delete(f"/api/sessions/{code}", headers=teacher)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, sampling, return_exceptions=True)
    latencies, lost = [], 0
    for follower in followers:
        statuses[f"events {follower.status}"] += 1
        for version, t0 in sent.items():
            if version in follower.seen:
                latencies.append(follower.seen[version] - t0)
            else:
                lost += 1
    return {"latencies": latencies, "lost": lost, "statuses": statuses, "cpu": sampler.cpu, "rss": sampler.rss}


def report(name: str, result: dict) -> None:
    lat = result["latencies"]
    cpu, rss = result["cpu"] or [0.0], result["rss"] or [0]
    print(f"{name}: {len(lat)} deliveries, lost {result['lost']}; latency p50 {percentile(lat, .5) * 1000:.1f} ms, "
          f"p95 {percentile(lat, .95) * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms")
    print(f"   server CPU mean {statistics.fmean(cpu):.0f}% peak {max(cpu):.0f}% (of one core); "
          f"RSS {min(rss) / 2**20:.0f}–{max(rss) / 2**20:.0f} MB; statuses {dict(sorted(result['statuses'].items()))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--followers", type=int, default=100)
    parser.add_argument("--changes", type=int, default=40)
    parser.add_argument("--submissions", type=int, default=30)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds over which changes are spread")
    parser.add_argument("--redis", action="store_true", help="sessions in a local redis-server (pub/sub path)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="convscope-bench-class-") as tmp:
        redis = start_redis(Path(tmp)) if args.redis else None
        env = {"CONVSCOPE_MAX_FOLLOWERS_PER_SESSION": "1000", "CONVSCOPE_MAX_SUBMISSIONS_PER_SESSION": "1000",
               **({"CONVSCOPE_REDIS_URL": redis.url} if redis else {})}
        try:
            with live_server(Path(tmp), env=env, host=HOST, threads=1, start_timeout_s=180) as server:
                baseline = asyncio.run(one_round(server.port, 1, args.changes, 0, args.duration / 2, server.pid))
                loaded = asyncio.run(one_round(server.port, args.followers, args.changes, args.submissions,
                                               args.duration, server.pid))
        finally:
            if redis is not None:
                redis.stop()
    print(f"sessions in {'Redis (pub/sub)' if args.redis else 'the server process'}")
    report("baseline (1 follower, no submissions)", baseline)
    report(f"class ({args.followers} followers, {args.submissions} submissions)", loaded)
    ratio = percentile(loaded["latencies"], .95) / max(1e-9, percentile(baseline["latencies"], .95))
    worst = max(loaded["latencies"])
    print(f"p95 ratio class / baseline: {ratio:.1f}x; max {worst * 1000:.0f} ms "
          f"({'meets' if worst <= 1.0 and not loaded['lost'] else 'MISSES'} the goal: every change to every follower "
          "within 1 s)")
    print(json.dumps({"baseline_p95_ms": percentile(baseline["latencies"], .95) * 1000,
                      "class_p50_ms": percentile(loaded["latencies"], .5) * 1000,
                      "class_p95_ms": percentile(loaded["latencies"], .95) * 1000,
                      "class_max_ms": worst * 1000, "lost": loaded["lost"],
                      "cpu_mean_pct": statistics.fmean(loaded["cpu"] or [0]),
                      "rss_max_mb": max(loaded["rss"] or [0]) / 2**20}))


if __name__ == "__main__":
    main()
