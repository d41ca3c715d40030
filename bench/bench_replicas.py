"""Throughput of 1, 2 and 3 ConvScope replicas behind nginx, as ratios to 1 replica measured in the same run.

Three replicas share Redis (sessions, images, jobs); three nginx instances front the first 1, 2 and 3 of
them (deploy/nginx/proxy.conf). Rounds interleave the three set-ups. The load is the classroom mix, one
"student action" each: upload a fresh drawing (decoded in a child process) and open four views of it
(lenet5 predictions, its input.npy, an activations.npy and a Grad-CAM saliency.npy), with ``--clients``
kept-alive clients at once. Nothing is served from a cache: every action is a new image.

On a 2-core machine the replicas share two cores, so the ratio stops growing near 2 (less while other work
runs: the load average is printed). The capacity model in the README divides the measured actions per
second by the cores used and by how often a student acts.

    .venv/bin/python bench/bench_replicas.py [--rounds 3] [--seconds 8] [--clients 6]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from harness import Nginx, UvicornProcess, free_port, start_redis  # the one harness (bench/harness.py)
from PIL import Image


def drawing(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    canvas = np.zeros((28, 28), dtype=np.uint8)
    for _ in range(6):
        y, x = rng.integers(3, 25, size=2)
        canvas[max(0, y - 2):y + 2, max(0, x - 2):x + 2] = 255
    buf = io.BytesIO()
    Image.fromarray(canvas).save(buf, format="PNG")
    return buf.getvalue()


def student_action(client: httpx.Client, seed: int) -> bool:
    response = client.post("/api/images", files={"file": ("d.png", drawing(seed))})
    if response.status_code != 201:
        return False
    base = f"/api/models/lenet5/images/{response.json()['image_id']}"
    views = [f"{base}/predictions", f"{base}/input.npy", f"{base}/layers/features.3/activations.npy",
             f"{base}/saliency.npy?method=gradcam"]
    return all(client.get(url).status_code == 200 for url in views)


def measure(url: str, seconds: float, clients: int, seeds: list[int]) -> tuple[float, int]:
    """Actions per second through ``url`` with ``clients`` at once, and how many failed."""
    done, failed = [0], [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def run() -> None:
        with httpx.Client(base_url=url, timeout=120) as client:  # kept alive, as a page's
            while time.monotonic() < stop:
                with lock:
                    seeds[0] += 1
                    seed = seeds[0]
                ok = student_action(client, seed)
                with lock:
                    done[0] += ok
                    failed[0] += not ok

    started = time.monotonic()
    threads = [threading.Thread(target=run) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done[0] / (time.monotonic() - started), failed[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        redis = start_redis(folder)
        env = {"CONVSCOPE_REDIS_URL": redis.url, "CONVSCOPE_IMAGE_STORE": redis.url,
               "CONVSCOPE_FORWARDED_ALLOW_IPS": "127.0.0.2", "CONVSCOPE_UPLOAD_QUOTA_COUNT": "0",
               "CONVSCOPE_UPLOAD_QUOTA_BYTES": str(2**40), "CONVSCOPE_TORCH_THREADS": "1"}
        replicas = [UvicornProcess(f"replica-{i}", free_port(), env, folder) for i in range(3)]
        fronts = [Nginx(free_port(), folder / f"nginx-{n}", [r.port for r in replicas[:n]]) for n in (1, 2, 3)]
        try:
            for replica in replicas:
                replica.start()
            for replica in replicas:
                replica.wait(timeout=300)
            for front in fronts:
                front.start()
            seeds = [0]
            for front in fronts:  # warm-up: models loaded on every replica
                measure(front.url, 2.0, len(front.upstreams), seeds)
            rates: dict[int, list[float]] = {1: [], 2: [], 3: []}
            failures = 0
            for _ in range(args.rounds):
                for n, front in zip((1, 2, 3), fronts):
                    rate, failed = measure(front.url, args.seconds, args.clients, seeds)
                    rates[n].append(rate)
                    failures += failed
            base = statistics.median(rates[1])
            print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; {args.clients} clients, "
                  f"{args.rounds} rounds of {args.seconds:g} s, {failures} failed actions")
            for n in (1, 2, 3):
                median = statistics.median(rates[n])
                print(f"{n} replica(s): {median:.2f} student actions/s (median; rounds "
                      f"{', '.join(f'{r:.2f}' for r in rates[n])}) = {median / base:.2f}x one replica")
        finally:
            for front in fronts:
                front.stop()
            for replica in replicas:
                replica.stop()
            redis.stop()


if __name__ == "__main__":
    main()
