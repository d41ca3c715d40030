"""Load benchmark: a classroom of clients against a real uvicorn on loopback.

Starts ``uvicorn server.main:create_app`` on 127.0.0.1 (a free port, a temporary image store), warms it
up, then runs the same request mix twice:

1. one client, sequentially (the baseline, run before and after the concurrent run and averaged), and
2. ``--clients`` asyncio clients (httpx) sharing ``--requests`` requests,

and prints throughput for both and their ratio, every status seen, and the server's resident memory at
the start and the end of the concurrent run. The mix: uploads of fresh images (new bytes every time, so
each one is decoded), predictions, layer activations and Grad-CAM saliency, each on an image not analysed
before (so they compute rather than hit a cache), across the small bundled models. The activation cache
is given a small budget that the warm-up fills: memory is then measured in steady state. Deliberate 429/503 (overload) answers are counted apart from errors.

Run:  .venv/bin/python bench/bench_load.py [--clients 32] [--requests 500] [--sequential 500]
Goals (issue 6): zero errors besides 429/503, concurrent ≥ 0.9 × sequential throughput, RSS growth ≤ 50 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil
from harness import live_server  # the one harness (bench/harness.py → tests/harness.py)
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
# (model, a layer for activations): small bundled models, so the run stays short on a shared CPU.
MODELS = {"lenet5": "features.0", "tinyvgg-shapes": "block1.1", "mnist-deep": "conv2"}
KINDS = ("upload", "predictions", "activations", "saliency")
ACTIVATION_LAYERS = {**MODELS, "resnet18": "layer1.0.conv1", "mobilenet_v3_small": "features.1", "alexnet": "features.0"}
REQUEST_TIMEOUT_S = 120.0


def png(seed: int) -> bytes:
    """A 64×64 RGB picture unique to ``seed``: a blob on noise."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 80, (64, 64, 3), dtype=np.uint8)
    y, x = rng.integers(12, 52, size=2)
    arr[max(0, y - 10): y + 10, max(0, x - 10): x + 10] = rng.integers(150, 256, size=3, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


class Plan:
    """The request mix, in a fixed order so both runs do the same kinds of work in the same proportions.

    Analysis requests each take an image no earlier request has analysed (from a pool uploaded before
    the timing starts), so they compute instead of hitting a cache; uploads send bytes never seen before.
    """

    def __init__(self, pool: list[str], seed: int, kinds: tuple[str, ...] = KINDS,
                 models: tuple[str, ...] = tuple(MODELS)) -> None:
        self.kinds, self.models = kinds, models
        self.unused = iter(pool)
        self.rng = random.Random(seed)
        self.fresh_seeds = iter(range(1_000_000 * (seed + 1), 1_000_000 * (seed + 2)))

    def requests(self, count: int) -> list[tuple[str, str, bytes | None]]:
        out: list[tuple[str, str, bytes | None]] = []
        for i in range(count):
            kind = self.kinds[i % len(self.kinds)]
            if kind == "upload":
                out.append((kind, "/api/images", png(next(self.fresh_seeds))))
                continue
            model = self.rng.choice(self.models)
            base = f"/api/models/{model}/images/{next(self.unused)}"
            if kind == "predictions":
                out.append((kind, f"{base}/predictions", None))
            elif kind == "activations":
                out.append((kind, f"{base}/layers/{ACTIVATION_LAYERS[model]}/activations.npy", None))
            else:
                out.append((kind, f"{base}/saliency.npy?method=gradcam", None))
        return out


@dataclass
class Tally:
    statuses: Counter = field(default_factory=Counter)
    by_kind: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def record(self, kind: str, path: str, status: int, text: str) -> None:
        self.statuses[status] += 1
        self.by_kind[(kind, status)] += 1
        if not (200 <= status < 300 or status in (429, 503)):
            self.errors.append(f"{kind} {path} → {status} {text[:160]}")

    @property
    def deliberate(self) -> int:
        return self.statuses[429] + self.statuses[503]


async def send(client: httpx.AsyncClient, request: tuple[str, str, bytes | None], tally: Tally) -> None:
    kind, path, body = request
    try:
        if body is not None:
            response = await client.post(path, files={"file": ("fresh.png", body, "image/png")})
        else:
            response = await client.get(path)
        tally.record(kind, path, response.status_code, response.text if response.status_code >= 400 else "")
    except httpx.HTTPError as exc:
        tally.record(kind, path, 0, f"{type(exc).__name__}: {exc}")


async def run_sequential(base: str, requests: list) -> tuple[float, Tally]:
    tally = Tally()
    async with httpx.AsyncClient(base_url=base, timeout=REQUEST_TIMEOUT_S) as client:
        started = time.perf_counter()
        for request in requests:
            await send(client, request, tally)
        return time.perf_counter() - started, tally


async def run_concurrent(base: str, requests: list, clients: int) -> tuple[float, Tally]:
    tally = Tally()
    queue: asyncio.Queue = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)

    async def student(n: int) -> None:
        # One connection per client from its own loopback address (127.0.x.y), like one laptop each: the
        # server's per-client shares count clients by address, as they would count real laptops.
        transport = httpx.AsyncHTTPTransport(local_address=f"127.0.{n // 256}.{n % 256}")
        async with httpx.AsyncClient(base_url=base, timeout=REQUEST_TIMEOUT_S, transport=transport,
                                     limits=httpx.Limits(max_connections=1)) as client:
            while True:
                try:
                    request = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await send(client, request, tally)

    started = time.perf_counter()
    await asyncio.gather(*(student(n) for n in range(2, clients + 2)))
    return time.perf_counter() - started, tally


def rss_mb(process: psutil.Process) -> float:
    return process.memory_info().rss / 2**20


def report(name: str, seconds: float, count: int, tally: Tally) -> float:
    rate = count / seconds
    kinds = ", ".join(f"{k} {s}×{n}" for (k, s), n in sorted(tally.by_kind.items()))
    print(f"{name:<11} {count:4d} requests in {seconds:7.2f} s = {rate:7.1f} req/s | statuses {dict(tally.statuses)}")
    print(f"{'':<11} by kind: {kinds}")
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--sequential", type=int, default=500, help="requests in each one-client baseline run")
    parser.add_argument("--warmup", type=int, default=240)
    parser.add_argument("--rounds", type=int, default=1, help="repeat the concurrent run, printing RSS after each")
    parser.add_argument("--activation-cache-mb", type=int, default=24,
                        help="the server's activation cache budget: small, so that warm-up fills it")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, from {','.join(KINDS)}")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated model ids")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for the server, e.g. CONVSCOPE_MAX_BATCH_SIZE=1 to turn batching off")
    args = parser.parse_args()
    kinds = tuple(k for k in args.kinds.split(",") if k)
    models = tuple(m for m in args.models.split(",") if m)
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds or not models or not set(models) <= set(ACTIVATION_LAYERS):
        parser.error(f"kinds must come from {KINDS}; models from {sorted(ACTIVATION_LAYERS)}")
    extra_env = dict(item.split("=", 1) for item in args.server_env)

    env = {"CONVSCOPE_ACTIVATION_CACHE_BYTES": str(args.activation_cache_mb * 2**20), **extra_env}
    with tempfile.TemporaryDirectory(prefix="convscope-load-") as tmp, \
            live_server(Path(tmp), env=env, threads=None, start_timeout_s=180) as server:
        base = server.url
        proc = psutil.Process(server.pid)
        analyses = args.warmup + 2 * args.sequential + args.requests * args.rounds  # an upper bound
        with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT_S) as client:
            pool = [client.post("/api/images", files={"file": ("pool.png", png(seed), "image/png")}).json()["image_id"]
                    for seed in range(analyses)]
        plan = Plan(pool, seed=1, kinds=kinds, models=models)
        # Warm-up at full concurrency: every model loaded, every thread and allocator arena in use, and the
        # (deliberately small) activation cache filled, so the measured runs start in steady state.
        _, warm_tally = asyncio.run(run_concurrent(base, plan.requests(args.warmup), args.clients))
        if warm_tally.errors:
            print("warm-up errors:\n  " + "\n  ".join(warm_tally.errors[:10]))
            return 1
        print(f"server pid {server.pid} on {base}; device {httpx.get(base + '/api/health').json()['device']}; "
              f"{os.cpu_count()} CPUs seen; mix {'/'.join(kinds)} on {', '.join(models)}; "
              f"activation cache {args.activation_cache_mb} MB; {len(pool)} pool images")

        # The baseline runs before and after the concurrent run and is averaged: on a shared machine the
        # load from others drifts, and bracketing the measurement keeps the ratio honest.
        seq_s, seq_tally = asyncio.run(run_sequential(base, plan.requests(args.sequential)))
        seq_rate_before = report("sequential", seq_s, args.sequential, seq_tally)

        rss_start = rss_mb(proc)
        con_s, con_tally = asyncio.run(run_concurrent(base, plan.requests(args.requests), args.clients))
        rss_end = rss_mb(proc)
        con_rate = report(f"{args.clients} clients", con_s, args.requests, con_tally)

        seq2_s, seq2_tally = asyncio.run(run_sequential(base, plan.requests(args.sequential)))
        seq_rate = (seq_rate_before + report("sequential", seq2_s, args.sequential, seq2_tally)) / 2
        errors = seq_tally.errors + con_tally.errors + seq2_tally.errors
        for round_no in range(2, args.rounds + 1):  # more of the same: does memory level off?
            more_s, more_tally = asyncio.run(run_concurrent(base, plan.requests(args.requests), args.clients))
            errors += more_tally.errors
            print(f"round {round_no}: {args.requests / more_s:7.1f} req/s, RSS {rss_mb(proc):.1f} MB, "
                  f"statuses {dict(more_tally.statuses)}")
        ratio = con_rate / seq_rate
        print(f"sequential baseline (mean of before and after): {seq_rate:.1f} req/s")
        growth = rss_end - rss_start
        print(f"throughput ratio (concurrent / sequential): {ratio:.2f}  (goal ≥ 0.90)")
        print(f"deliberate 429/503: {con_tally.deliberate}; other errors: {len(errors)}  (goal 0)")
        print(f"server RSS: {rss_start:.1f} MB at start of the concurrent run, {rss_end:.1f} MB after "
              f"(growth {growth:+.1f} MB, goal ≤ 50)")
        for line in errors[:20]:
            print("  error:", line)
        ok = not errors and ratio >= 0.9 and growth <= 50
        print("RESULT:", "PASS" if ok else "FAIL")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
