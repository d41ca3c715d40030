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

Run: .venv/bin/python bench/bench_fairness.py [--repo PATH] [--cheap 60] [--burst 100]
(``--repo`` serves another checkout, e.g. main's code for the "before" figures.)
"""

from __future__ import annotations

import argparse
import asyncio
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


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def start_server(repo: Path, storage: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "CONVSCOPE_STORAGE_DIR": str(storage), "PYTHONPATH": str(repo),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "server.main:create_app", "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited: " + (proc.stderr.read() or b"").decode()[-2000:])
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start in 120 s")


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


async def cheap_round(client: httpx.AsyncClient, image_ids: list[str], gap_s: float
                      ) -> tuple[list[float], list[float], list[str]]:
    """One cheap prediction per fresh image and one health check after each, one at a time."""
    preds, health, failures = [], [], []
    for image_id in image_ids:
        start = time.perf_counter()
        try:
            r = await client.get(CHEAP.format(image_id), timeout=30)
            if r.status_code != 200:
                failures.append(f"predictions {r.status_code}")
        except httpx.HTTPError as exc:
            failures.append(f"predictions {type(exc).__name__}")
        preds.append(time.perf_counter() - start)
        start = time.perf_counter()
        try:
            r = await client.get("/api/health", timeout=30)
            if r.status_code != 200:
                failures.append(f"health {r.status_code}")
        except httpx.HTTPError as exc:
            failures.append(f"health {type(exc).__name__}")
        health.append(time.perf_counter() - start)
        await asyncio.sleep(gap_s)
    return preds, health, failures


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
    async with httpx.AsyncClient(base_url=base, limits=limits) as client:
        idle = await cheap_round(client, cheap_idle, gap_s)
        answers: list[tuple[int, str | None]] = []
        # saturate: one long heavy run per pool slot and a few queued (distinct clients), then the burst
        first = [asyncio.create_task(heavy(client, heavy_ids[i], f"saturate-{i}", answers)) for i in range(4)]
        await asyncio.sleep(1.0)
        rest = [asyncio.create_task(heavy(client, heavy_ids[4 + i], f"student-{i % 20}", answers))
                for i in range(burst)]
        await asyncio.sleep(1.0)
        busy = await cheap_round(client, cheap_busy, gap_s)
        heard = list(answers)
        running = sum(1 for task in first + rest if not task.done())
        stopped_in = await asyncio.to_thread(stop_server, proc)  # SIGTERM with the heavy work in flight
        for task in first + rest:
            task.cancel()
        await asyncio.gather(*first, *rest, return_exceptions=True)
    return {"idle": idle, "busy": busy, "heavy_answers": heard, "stopped_in": stopped_in, "running": running}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--cheap", type=int, default=60, help="cheap requests per phase")
    parser.add_argument("--burst", type=int, default=100, help="heavy requests in the burst")
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between cheap requests")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = start_server(args.repo.resolve(), Path(tmp) / "images", port)
        base = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=base, timeout=120) as client:
                def upload(data: bytes) -> str:
                    r = client.post("/api/images", files={"file": ("x.png", data, "image/png")})
                    r.raise_for_status()
                    return r.json()["image_id"]

                cheap = [upload(png(rng.integers(0, 256, (28, 28), dtype=np.uint8))) for _ in range(2 * args.cheap + 1)]
                heavy_ids = [upload(png(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)))
                             for _ in range(args.burst + 4)]
                client.get(CHEAP.format(cheap[-1])).raise_for_status()  # LeNet loaded
                client.get("/api/models/resnet18", params={"weights": "untrained"}).raise_for_status()
            result = asyncio.run(scenario(base, cheap[: args.cheap], cheap[args.cheap: 2 * args.cheap],
                                          heavy_ids, args.burst, args.gap, proc))
        finally:
            if proc.poll() is None:
                stop_server(proc)
    idle_p, idle_h, idle_fail = result["idle"]
    busy_p, busy_h, busy_fail = result["busy"]
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
