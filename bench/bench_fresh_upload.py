"""The first requests on a just-uploaded image, against a bare forward pass measured in the same run.

A real uvicorn serves the app in its own process (``tests/harness.live_server``, torch's default threads, as
``convscope serve`` runs it); this process is the page: one kept-alive HTTP client. Each round, interleaved:

  bare      ResNet-18 ``model(x)`` in this process (untrained, seeded: the same cost as trained weights), the
            fastest of 3, on the image's own input tensor
  fresh     POST /api/images with a photo, then at once GET predictions and ``saliency.npy?target=c`` for each of
            the top-5 classes (what the page asks for after an upload)                       goal ≤ 1.5× bare
  prepared  the same on another upload whose input tensor the server already made (GET input.npy first, then a
            pause): what the fresh path costs beyond preparing the image
  cached    the fresh image's requests again: every answer from the caches
  top-k     POST /api/images, then one GET ``saliency/topk.json?k=5``: what the Saliency view sends after an
            upload (the top-5 predictions and their five maps in one answer)                  goal ≤ 1.5× bare

Photos are the real ones in ``../shared/data/images``; each upload appends a few bytes after the image's end, so
that every upload is new to the server (a new sha256) while the decoded picture is the photo's. Figures are
min(time) / min(bare) over the rounds, each at its least disturbed, with the median of the per-round ratios.
Beside the wall-clock ratios, the CPU seconds the server (with its decoder processes) spent on each flow, over the
CPU seconds of the bare forward: on a shared, busy machine CPU time is disturbed much less than wall time.

    .venv/bin/python bench/bench_fresh_upload.py [--rounds 9]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from itertools import count
from pathlib import Path

import httpx
import numpy as np
import psutil
import torch
import torchvision
from harness import SHARED_DATA, live_server

K = 5
GOAL = 1.5
MODEL = "/api/models/resnet18/images/{}"
QUERY = {"weights": "untrained"}


def timed(fn) -> float:  # noqa: ANN001
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU of the server, its finished children (reaped decoders) and its live ones (the spare)."""
    times = process.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in process.children(recursive=True):
        try:
            child_times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += child_times.user + child_times.system
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    photos = sorted(p for p in (SHARED_DATA / "images").iterdir() if p.suffix in (".jpg", ".png"))
    serial = count()

    def upload(client: httpx.Client, photo: Path) -> str:
        data = photo.read_bytes() + next(serial).to_bytes(8, "big")  # new to the server, the same pixels
        answer = client.post("/api/images", files={"file": (photo.name, data)})
        answer.raise_for_status()
        return answer.json()["image_id"]

    def predictions(client: httpx.Client, image_id: str) -> list[int]:
        answer = client.get(MODEL.format(image_id) + "/predictions", params={**QUERY, "top_k": K})
        answer.raise_for_status()
        return [p["index"] for p in answer.json()["predictions"]]

    def maps(client: httpx.Client, image_id: str, targets: list[int]) -> None:
        for target in targets:
            client.get(MODEL.format(image_id) + "/saliency.npy", params={**QUERY, "target": target}).raise_for_status()

    torch.manual_seed(0)
    bare_model = torchvision.models.resnet18().eval()
    env = {"CONVSCOPE_HEAVY_WORK_PER_CLIENT": "64", "CONVSCOPE_UPLOAD_QUOTA_COUNT": "0",
           "CONVSCOPE_UPLOAD_QUOTA_BYTES": str(2**40)}
    rows: dict[str, list[tuple[float, float]]] = {"fresh predictions": [], "fresh predictions + 5 maps": [],
                                                  "fresh topk.json (5 maps)": [],
                                                  "prepared predictions + 5 maps": [], "cached predictions + 5 maps": []}
    uploads = []
    cpu: dict[str, list[float]] = {name: [] for name in rows}  # server CPU seconds / bare forward CPU seconds
    with tempfile.TemporaryDirectory() as tmp, live_server(Path(tmp), env, threads=None) as server, \
            httpx.Client(base_url=server.url, timeout=300) as client:
        process = psutil.Process(server.pid)
        warm = upload(client, photos[0])  # the model built, its layers traced, timm imported: a warm server
        maps(client, warm, predictions(client, warm))
        for round_index in range(args.rounds):
            photo = photos[round_index % len(photos)]
            started = time.perf_counter()
            fresh = upload(client, photo)
            uploads.append(time.perf_counter() - started)
            pred_s = maps_s = 0.0
            cpu_before = cpu_seconds(process)

            def fresh_flow(image_id: str = fresh) -> None:
                nonlocal pred_s, maps_s
                start = time.perf_counter()
                targets = predictions(client, image_id)
                pred_s = time.perf_counter() - start
                maps(client, image_id, targets)
                maps_s = time.perf_counter() - start - pred_s

            fresh_flow()
            fresh_cpu = cpu_seconds(process) - cpu_before
            x = torch.from_numpy(np.load(io.BytesIO(client.get(MODEL.format(fresh) + "/input.npy",
                                                               params=QUERY).content)))[None]
            with torch.inference_mode():
                bare = min(timed(lambda x=x: bare_model(x)) for _ in range(3))
                start_cpu = time.process_time()
                bare_model(x)
                bare_cpu = time.process_time() - start_cpu
            cpu["fresh predictions + 5 maps"].append(fresh_cpu / bare_cpu)
            rows["fresh predictions"].append((pred_s, bare))
            rows["fresh predictions + 5 maps"].append((pred_s + maps_s, bare))
            rows["cached predictions + 5 maps"].append((timed(lambda i=fresh: maps(client, i, predictions(client, i))),
                                                        bare))
            topk_image = upload(client, photo)
            cpu_before = cpu_seconds(process)
            rows["fresh topk.json (5 maps)"].append((timed(lambda i=topk_image: client.get(
                MODEL.format(i) + "/saliency/topk.json", params={**QUERY, "k": K}).raise_for_status()), bare))
            cpu["fresh topk.json (5 maps)"].append((cpu_seconds(process) - cpu_before) / bare_cpu)
            prepared = upload(client, photo)
            client.get(MODEL.format(prepared) + "/input.npy", params=QUERY).raise_for_status()
            time.sleep(0.5)  # the decoder's next worker process has started
            cpu_before = cpu_seconds(process)
            rows["prepared predictions + 5 maps"].append(
                (timed(lambda i=prepared: maps(client, i, predictions(client, i))), bare))
            cpu["prepared predictions + 5 maps"].append((cpu_seconds(process) - cpu_before) / bare_cpu)
    load = os.getloadavg()
    print(f"ResNet-18, {args.rounds} rounds, torch {torch.__version__} ({torch.get_num_threads()} threads here), "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    print(f"bare forward {1000 * min(b for _, b in rows['fresh predictions']):.1f} ms (fastest); "
          f"upload {1000 * statistics.median(uploads):.0f} ms (median, not counted)")
    for name, pairs in rows.items():
        ratio = min(t for t, _ in pairs) / min(b for _, b in pairs)
        median = statistics.median(t / b for t, b in pairs)
        goal = ""
        if name in ("fresh predictions + 5 maps", "fresh topk.json (5 maps)"):
            goal = "  ok" if ratio <= GOAL else f"  ABOVE goal {GOAL}×"
        cpu_text = f"; server CPU {statistics.median(cpu[name]):.2f}× the bare forward's" if cpu[name] else ""
        print(f"{name:<30} {ratio:5.2f}× bare  (median of ratios {median:.2f}, n={len(pairs)}{cpu_text}){goal}")


if __name__ == "__main__":
    main()
