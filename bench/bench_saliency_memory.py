"""Resident memory over 1,000 saliency requests in a loop (goal: growth ≤ 50 MB).

Requests go through the real app (TestClient) on one uploaded image; methods, target classes and layers
rotate so that nearly every request computes (the result cache is bounded, so hits would hide a leak).
RSS is printed after a warm-up and every 200 requests; growth is measured from the end of the warm-up.

Run: .venv/bin/python bench/bench_saliency_memory.py [--model resnet18] [--requests 1000]
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

METHODS = ("gradcam", "gradcampp", "xgradcam", "layercam", "eigencam", "gradient", "guided-backprop")
LAYERS = {"resnet18": ("layer4", "layer3", "layer2.1"), "tinyvgg-shapes": ("block2.3", "block2.1", "block1.3")}


def rss_mb() -> float:
    return psutil.Process(os.getpid()).memory_info().rss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18", choices=sorted(LAYERS))
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    from fastapi.testclient import TestClient

    from server.main import create_app
    from server.settings import Settings

    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    layers = LAYERS[args.model]
    with tempfile.TemporaryDirectory() as tmp, TestClient(create_app(Settings(storage_dir=Path(tmp)))) as client:
        image_id = client.post("/api/images", files={"file": ("noise.png", buf.getvalue(), "image/png")}).json()[
            "image_id"
        ]
        num_classes = client.get(f"/api/models/{args.model}").json()["num_classes"]
        base = f"/api/models/{args.model}/images/{image_id}/saliency.npy?weights=untrained"

        def request(i: int) -> None:
            url = f"{base}&method={METHODS[i % len(METHODS)]}&target={(7 * i) % num_classes}&layer={layers[i % len(layers)]}"
            response = client.get(url)
            assert response.status_code == 200, response.text

        for i in range(args.warmup):
            request(i)
        gc.collect()
        start_rss = rss_mb()
        start = time.perf_counter()
        print(f"{args.model}: after {args.warmup} warm-up requests RSS = {start_rss:.1f} MB", flush=True)
        for i in range(args.requests):
            request(args.warmup + i)
            if (i + 1) % 200 == 0:
                gc.collect()
                print(f"  {i + 1:5d} requests: RSS = {rss_mb():.1f} MB ({rss_mb() - start_rss:+.1f} MB)", flush=True)
        gc.collect()
        growth = rss_mb() - start_rss
        elapsed = time.perf_counter() - start
        print(
            f"{args.requests} saliency requests in {elapsed:.0f} s: RSS grew {growth:+.1f} MB "
            f"(goal ≤ 50 MB) — {'OK' if growth <= 50 else 'OVER'}"
        )


if __name__ == "__main__":
    main()
