"""Live-mode benchmark: a generated video of real photos streamed through WS /api/models/{model}/live.

The video: slow pans and zooms over each photo in ../shared/data/images, 640×480 JPEG frames (what the
page sends from a webcam), made here in memory. A real uvicorn serves the app on 127.0.0.1 (a free port,
a temporary image store). Each client behaves like the page: at most two frames unanswered, a new frame
sent as soon as an answer arrives, so the server always has the next frame waiting.

Printed per scenario: answered frames/s, frame latency (send → answer) p50/p95, the server's own time
per frame (p50), and errors. Baselines measured in the same run and process settings (torch threads):
a bare ``model(x)`` on a preprocessed frame, and the bare pipeline (decode + preprocess + forward) with
no server, before and after the live runs — their spread says how noisy the machine was. Fairness: N
clients at once on one model; frames/s per client and max/min.

Scenarios: lenet5 and tinyvgg-shapes (predictions + their default layer's maps); efficientnet_lite0
with Grad-CAM when that model is registered. Goals (issue 14, a 2-core CPU): ≥ 20 frames/s for the
small models, ≥ 8 for efficientnet_lite0 + Grad-CAM; under 5 clients max/min frames/s per client ≤ 2.

Run:  .venv/bin/python bench/bench_live.py [--seconds 8] [--clients 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from harness import live_server  # the one harness (bench/harness.py → tests/harness.py)
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
PHOTOS = REPO_ROOT.parent / "shared" / "data" / "images"
FRAME_SIZE = (640, 480)
FRAMES_PER_PHOTO = 20
MAX_IN_FLIGHT = 2
SCENARIOS = (("lenet5", ""), ("tinyvgg-shapes", ""), ("efficientnet_lite0", "method=gradcam"))


def video_frames(folder: Path = PHOTOS, per_photo: int = FRAMES_PER_PHOTO) -> list[bytes]:
    """JPEG frames panning and zooming over every photo (a zoom from the whole picture to 60 % of it
    while the window drifts from one side to the other)."""
    frames = []
    width, height = FRAME_SIZE
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        photo = Image.open(path).convert("RGB")
        for i in range(per_photo):
            t = i / max(1, per_photo - 1)
            zoom = 1.0 - 0.4 * t
            w = min(photo.width, photo.height * width / height) * zoom
            h = w * height / width
            left = max(0.0, photo.width - w) * (0.2 + 0.6 * t)
            top = max(0.0, photo.height - h) * (0.5 + 0.3 * float(np.sin(np.pi * t)))
            frame = photo.resize(FRAME_SIZE, Image.BILINEAR, box=(left, top, left + w, top + h))
            buf = io.BytesIO()
            frame.save(buf, format="JPEG", quality=80)
            frames.append(buf.getvalue())
    if not frames:
        raise SystemExit(f"no photos in {folder}")
    return frames


# --- the server ---------------------------------------------------------------------------------------

def model_ids(url: str) -> set[str]:
    with urllib.request.urlopen(url + "/api/models", timeout=30) as response:
        return {m["id"] for m in json.load(response)["models"]}


# --- clients ------------------------------------------------------------------------------------------

@dataclass
class ClientResult:
    answers: list[float] = field(default_factory=list)  # perf_counter times of answers within the window
    latencies_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)  # arrival → answer sent, waiting included
    work_ms: list[float] = field(default_factory=list)  # decode + model + encode of the frame
    errors: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    dropped: int = 0

    def fps(self, seconds: float) -> float:
        return len(self.answers) / seconds


async def stream(url: str, frames: list[bytes], offset: int, seconds: float, start_at: float) -> ClientResult:
    """One page-like client: ≤ MAX_IN_FLIGHT unanswered frames, from ``start_at`` for ``seconds``."""
    from websockets.asyncio.client import connect

    result = ClientResult()
    async with connect(url, max_size=2**24, open_timeout=120) as ws:
        ready = json.loads(await ws.recv())
        if "ready" not in ready:
            raise SystemExit(f"{url}: {ready}")
        await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
        end = start_at + seconds
        sent_at: dict[int, float] = {}

        async def send_more() -> None:
            while len(sent_at) < MAX_IN_FLIGHT:
                result.sent += 1
                sent_at[result.sent] = time.perf_counter()
                await ws.send(frames[(offset + result.sent) % len(frames)])

        await send_more()
        while sent_at:
            message = json.loads(await ws.recv())
            now = time.perf_counter()
            number = message.get("frame")
            if "error" in message:
                code = message["error"]["code"]
                result.errors[code] = result.errors.get(code, 0) + 1
            elif number in sent_at:
                if now <= end:
                    result.answers.append(now)
                    result.latencies_ms.append((now - sent_at[number]) * 1000)
                    timing = message["timing"]
                    result.server_ms.append(timing["server_ms"])
                    result.work_ms.append(timing["decode_ms"] + timing["model_ms"] + timing["encode_ms"])
                result.dropped += message.get("dropped", 0)
            for key in [k for k in sent_at if number is not None and k <= number]:
                del sent_at[key]
            if now < end:
                await send_more()
    return result


async def run_clients(url: str, frames: list[bytes], count: int, seconds: float) -> list[ClientResult]:
    start_at = time.perf_counter() + 2.0  # every client connected (and the model loaded) before timing
    spread = len(frames) // max(1, count)
    return list(await asyncio.gather(*(stream(url, frames, i * spread, seconds, start_at) for i in range(count))))


def warm_up(url: str, frames: list[bytes]) -> None:
    asyncio.run(run_clients(url, frames[:8], 1, 1.0))


# --- baselines in this process ------------------------------------------------------------------------

def quantile(values: list[float], q: float) -> float:
    return float(np.quantile(values, q)) if values else float("nan")


def baselines(model: str, method: str | None, frames: list[bytes], threads: int, repeats: int = 40) -> dict[str, float]:
    """Median bare model(x) and bare pipeline (decode + preprocess + forward [+ Grad-CAM backward]) in ms."""
    import torch

    from server.services.images.decode import decode_image
    from server.services.runtime.model_runtime import ModelRuntime

    torch.set_num_threads(threads)
    loaded = ModelRuntime(torch.device("cpu"), 2).load(model)
    tensors = [loaded.preprocess(decode_image(f, 4_000_000))[None] for f in frames[:8]]
    bare: list[float] = []
    pipeline: list[float] = []
    leaf: dict[str, torch.Tensor] = {}

    def as_leaf(_module: object, _inputs: object, out: torch.Tensor) -> torch.Tensor:
        leaf["a"] = out.detach().requires_grad_(True)  # the backward stops at the CAM layer, as the server's
        return leaf["a"]

    for i in range(repeats):
        x = tensors[i % len(tensors)]
        t0 = time.perf_counter()
        with torch.inference_mode():
            loaded.module(x)
        bare.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        batch = loaded.preprocess(decode_image(frames[i % len(frames)], 4_000_000))[None]
        if method:
            handle = loaded.layer(loaded.entry.target_layer).register_forward_hook(as_leaf)
            try:
                with torch.enable_grad():
                    logits = loaded.module(batch)
                    torch.autograd.grad(logits[0].max(), leaf.pop("a"))
            finally:
                handle.remove()
        else:
            with torch.inference_mode():
                loaded.module(batch)
        pipeline.append((time.perf_counter() - t0) * 1000)
    return {"bare_ms": statistics.median(bare), "bare_p10": quantile(bare, 0.1), "bare_p90": quantile(bare, 0.9),
            "pipeline_ms": statistics.median(pipeline)}


# --- report -------------------------------------------------------------------------------------------

def report(name: str, results: list[ClientResult], seconds: float, base: dict[str, float]) -> dict[str, float]:
    lat = [v for r in results for v in r.latencies_ms]
    server = [v for r in results for v in r.server_ms]
    work = [v for r in results for v in r.work_ms]
    fps = [r.fps(seconds) for r in results]
    errors: dict[str, int] = {}
    for r in results:
        for code, n in r.errors.items():
            errors[code] = errors.get(code, 0) + n
    total = sum(fps)
    line = (f"{name:<34} {total:6.1f} frames/s | latency p50 {quantile(lat, .5):6.1f} ms p95 {quantile(lat, .95):6.1f} ms"
            f" | on the server p50 {quantile(server, .5):6.1f} ms, of it working {quantile(work, .5):5.1f} ms"
            f"\n{'':<34} bare model(x) {base['bare_ms']:.2f} ms; bare pipeline {base['pipeline_ms']:.2f} ms"
            f" (1 / pipeline = {1000 / base['pipeline_ms']:.0f} frames/s); frames/s × pipeline = "
            f"{total * base['pipeline_ms'] / 1000:.2f} (1.0: the server runs frames back to back at the bare cost;"
            f" {2 if len(results) > 1 else 1} core(s) can give up to that)")
    if len(results) > 1:
        line += f"\n{'':<34} per client {', '.join(f'{v:.1f}' for v in fps)} frames/s; max/min {max(fps) / max(min(fps), 1e-9):.2f}"
    if errors:
        line += f"\n{'':<34} errors: {errors}"
    print(line, flush=True)
    return {"fps": total, "p50": quantile(lat, .5), "p95": quantile(lat, .95)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="timed window per scenario")
    parser.add_argument("--clients", type=int, default=5, help="clients at once in the fairness run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (server and baselines)")
    args = parser.parse_args()

    t0 = time.perf_counter()
    frames = video_frames()
    print(f"video: {len(frames)} frames {FRAME_SIZE[0]}×{FRAME_SIZE[1]} JPEG from {PHOTOS} "
          f"(mean {np.mean([len(f) for f in frames]) / 1024:.0f} KB), made in {time.perf_counter() - t0:.1f} s")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start; "
          f"torch threads {args.threads} in the server and the baselines")
    env = {"CONVSCOPE_TORCH_THREADS": str(args.threads), "CONVSCOPE_MAX_LIVE_CLIENTS": str(max(8, args.clients))}
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp, \
            live_server(Path(tmp), env=env, threads=None, start_timeout_s=180) as server:
        url = server.url
        ws_url = url.replace("http://", "ws://")
        available = model_ids(url)
        scenarios = [(m, q) for m, q in SCENARIOS if m in available]
        skipped = [m for m, _ in SCENARIOS if m not in available]
        if skipped:
            print(f"not registered here, skipped: {', '.join(skipped)}")
        before = {m: baselines(m, "gradcam" in q and "gradcam", frames, args.threads) for m, q in scenarios}
        for model, q in scenarios:
            live = f"{ws_url}/api/models/{model}/live{'?' + q if q else ''}"
            warm_up(live, frames)
            results = asyncio.run(run_clients(live, frames, 1, args.seconds))
            report(f"{model}{' + ' + q if q else ''}, 1 client", results, args.seconds, before[model])
        for model, q in scenarios[:2]:
            live = f"{ws_url}/api/models/{model}/live{'?' + q if q else ''}"
            results = asyncio.run(run_clients(live, frames, args.clients, args.seconds))
            report(f"{model}, {args.clients} clients at once", results, args.seconds, before[model])
        after = {m: baselines(m, "gradcam" in q and "gradcam", frames, args.threads) for m, q in scenarios}
        print("noise: bare model(x) median before → after (p10–p90 before):")
        for m in before:
            b, a = before[m], after[m]
            print(f"  {m:<20} {b['bare_ms']:.2f} → {a['bare_ms']:.2f} ms ({b['bare_p10']:.2f}–{b['bare_p90']:.2f});"
                  f" pipeline {b['pipeline_ms']:.2f} → {a['pipeline_ms']:.2f} ms")
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
