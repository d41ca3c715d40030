"""The HTTP path against the math, in one run: every figure is a ratio to a bare ``model(x)`` measured in
the same run, interleaved with it (the machine is shared and noisy).

  http-flow    ResNet-18, a fresh image: GET predictions, then saliency.npy?target=c for each of the
               top-5 classes (what a script using API.md does)                                  goal ≤ 2.0×
  http-topk    ResNet-18, a fresh image: GET saliency/topk.json                                 goal ≤ 1.6×
  inproc-top5  predictions + top-5 Grad-CAM in-process (ResNet-18, ResNet-50, VGG-16)           goal ≤ 1.2×
  vgg16-floor  VGG-16: one forward + the exact batched gradient of 5 class scores back to the target
               layer (through the 25088×4096 classifier layer): the least any top-5 can cost
  concurrent   10 concurrent identical uncached Score-CAM requests (tinyvgg-shapes) vs one        goal ≤ 1.3×

It serves the real app with uvicorn on 127.0.0.1 (a free port, stopped at the end): in this process for
the sequential figures, in its own process for ``concurrent`` (as ``convscope serve`` runs it; the ten
clients are other machines in a classroom, so they must not share the server's interpreter: here they are
ten raw HTTP/1.1 connections from this process). The torchvision models run untrained offline: fine for
timing.

Run: .venv/bin/python bench/bench_saliency_http.py [--repeats 7] [--skip-vgg]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import torch
import uvloop
from harness import free_port, serving, wait_until  # the one harness (bench/harness.py → tests/harness.py)
from PIL import Image

from server.main import create_app  # noqa: E402
from server.services.runtime.hooks import capture_layer  # noqa: E402
from server.services.saliency.base import class_gradients  # noqa: E402
from server.services.saliency.topk import predictions_with_saliency  # noqa: E402
from server.settings import Settings  # noqa: E402

K = 5


def picture(seed: int, size: int = 224) -> bytes:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    image = Image.fromarray(base).resize((size, size), Image.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bare_time(module: torch.nn.Module, x: torch.Tensor, repeats: int = 3) -> float:
    """The fastest of a few bare forwards (the machine is shared: the minimum is the least disturbed)."""
    with torch.inference_mode():
        return min(timed(lambda: module(x)) for _ in range(repeats))


def report(name: str, pairs: list[tuple[float, float]], goal: float | None, extra: str = "") -> None:
    """``pairs``: (time, bare time) per repeat, interleaved. The figure is min(time) / min(bare) — each
    at its least disturbed — with the median of the per-repeat ratios beside it."""
    ratio = min(t for t, _ in pairs) / min(b for _, b in pairs)
    median = statistics.median(t / b for t, b in pairs)
    verdict = "" if goal is None else ("  ok" if ratio <= goal else f"  ABOVE goal {goal}×")
    print(f"{name:<26} {ratio:6.2f}× bare  (median of ratios {median:.2f}, n={len(pairs)}, "
          f"bare {1000 * min(b for _, b in pairs):.1f} ms){verdict} {extra}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--skip-vgg", action="store_true")
    parser.add_argument("--only-concurrent", action="store_true", help="just the 10-concurrent-requests figure")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    if args.only_concurrent:
        concurrent(args.repeats)
        return
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(storage_dir=Path(tmp) / "images", heavy_work_per_client=64))
        with serving(app) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as client:
            ids = [client.post("/api/images", files={"file": ("p.png", picture(i))}).json()["image_id"]
                   for i in range(2 * args.repeats + 2)]
            state = app.state
            runtime, inputs = state.runtime, state.inputs
            loaded = runtime.load("resnet18", "untrained")
            model_url = "/api/models/resnet18/images/{}"
            q = {"weights": "untrained"}
            # warm-up: model built, architecture traced, first allocations done
            client.get(model_url.format(ids[-1]) + "/predictions", params=q)
            client.get(model_url.format(ids[-1]) + "/saliency/topk.json", params=q)

            flow, topk = [], []
            for i in range(args.repeats):
                fresh_a, fresh_b = ids[2 * i], ids[2 * i + 1]
                x = inputs.batch(loaded, fresh_a)
                bare = bare_time(loaded.module, x)

                def run_flow(image_id: str = fresh_a) -> None:
                    preds = client.get(model_url.format(image_id) + "/predictions", params={**q, "top_k": K})
                    for p in preds.json()["predictions"]:
                        r = client.get(model_url.format(image_id) + "/saliency.npy", params={**q, "target": p["index"]})
                        assert r.status_code == 200, r.text

                flow.append((timed(run_flow), bare))
                topk.append((timed(lambda b=fresh_b: client.get(model_url.format(b) + "/saliency/topk.json",
                                                               params=q).raise_for_status()), bare))
            report("http-flow resnet18", flow, 2.0, "(predictions + 5 × saliency.npy?target=c)")
            report("http-topk resnet18", topk, 1.6, "(saliency/topk.json)")

            models = ["resnet18", "resnet50"] + ([] if args.skip_vgg else ["vgg16"])
            for model_id in models:
                m = runtime.load(model_id, "untrained")
                spec = m.entry.input
                x = torch.randn(1, spec.channels, spec.height, spec.width, generator=torch.Generator().manual_seed(1))
                predictions_with_saliency(m, x, k=K)  # warm-up
                ratios, floors = [], []
                for _ in range(args.repeats):
                    bare = bare_time(m.module, x)
                    ratios.append((timed(lambda m=m, x=x: predictions_with_saliency(m, x, k=K)), bare))
                    if model_id == "vgg16":
                        floors.append((floor_time(m, x), bare))
                report(f"inproc-top5 {model_id}", ratios, 1.2 if model_id != "vgg16" else None)
                if floors:
                    report("vgg16-floor", floors, None, "(forward + exact batched gradient to features.29)")

    concurrent(args.repeats)


def floor_time(loaded, x: torch.Tensor) -> float:  # noqa: ANN001
    """One forward with the target layer as a grad leaf, then the batched 5-class gradient to it: the
    least any exact top-5 Grad-CAM can cost (no CAM weighting, no upsampling, no scaling)."""
    start = time.perf_counter()
    layer = loaded.layer(loaded.entry.target_layer)
    with torch.enable_grad(), capture_layer(loaded, layer) as captured:
        logits = loaded.module(x)
    targets = [int(i) for i in torch.topk(logits[0].detach(), K).indices]
    with torch.enable_grad():
        class_gradients(logits, captured.activation, targets)
    return time.perf_counter() - start


@contextmanager
def served_apart(storage: Path) -> Iterator[tuple[int, Callable[[], dict]]]:
    """The app in its own process, as ``convscope serve`` runs it (bench/serve_with_stats.py); yields the port
    and a function that asks the server for its counts. Stopped (and waited for) at the end."""
    port = free_port()
    env = {**os.environ, "CONVSCOPE_STORAGE_DIR": str(storage), "CONVSCOPE_HEAVY_WORK_PER_CLIENT": "64"}
    process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("serve_with_stats.py")), str(port)],
                               env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdin is not None and process.stdout is not None

    def stats() -> dict:
        process.stdin.write("stats\n")
        process.stdin.flush()
        return json.loads(process.stdout.readline())

    def healthy() -> bool:
        assert process.poll() is None, "the server exited"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/api/health").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, timeout=120, what="the server to start", poll_s=0.1)
        yield port, stats
    finally:
        process.stdin.close()  # the server stops at the end of its input
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Browser:
    """One student's browser: a kept-alive HTTP/1.1 connection, already open (the page was loaded before the
    teacher shared the image), sending plain GETs. This process only writes requests and reads answers: no
    client library between the clock and the server."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def open(self) -> Browser:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        await self.get("/api/health")
        return self

    async def get(self, target: str) -> tuple[int, bytes]:
        self.writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
        return int(lines[0].split(" ", 2)[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def concurrent(repeats: int = 7, model: str = "tinyvgg-shapes", size: int = 64) -> None:
    """Ten identical uncached Score-CAM requests at once vs one, against the server in its own process (the
    way it is deployed: ten students are ten other machines). One computation serves them all, which the
    server's own counts confirm."""
    with tempfile.TemporaryDirectory() as tmp, served_apart(Path(tmp) / "images") as (port, stats):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as client:
            fresh = [client.post("/api/images", files={"file": ("s.png", picture(1000 + i, size))}).json()["image_id"]
                     for i in range(2 * repeats + 2)]
        target = f"/api/models/{model}/images/{{}}/saliency.npy?method=scorecam&weights=untrained"

        def many(image_id: str, n: int) -> float:
            async def together() -> float:
                browsers = [await Browser(port).open() for _ in range(n)]
                try:
                    start = time.perf_counter()
                    answers = await asyncio.gather(*(b.get(target.format(image_id)) for b in browsers))
                    elapsed = time.perf_counter() - start
                finally:
                    for b in browsers:
                        b.close()
                assert all(status == 200 for status, _ in answers), [status for status, _ in answers]
                assert len({body for _, body in answers}) == 1
                return elapsed

            return uvloop.run(together())

        many(fresh[-1], 10)  # warm-up: the model built, the first allocations done
        ratios = []
        for i in range(repeats):
            one = many(fresh[2 * i], 1)
            before = stats()
            ten = many(fresh[2 * i + 1], 10)
            after = stats()
            assert after["saliency_computations"] - before["saliency_computations"] == 1, \
                "ten identical requests ran more than one computation"
            ratios.append((ten, one))
        shared = {k: after[k] for k in ("answers_copied", "answers_ran_alone", "saliency_shared", "saliency_hits")}
    report(f"concurrent ×10 {model}", ratios, 1.3,
           f"(here 'bare' = one request alone; 1 computation per ten, server counts {shared})")


if __name__ == "__main__":
    main()
