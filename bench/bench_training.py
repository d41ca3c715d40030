"""Training benchmark (issue 24), as ratios measured in the same run on the same machine.

A real uvicorn serves the app (a free loopback port, a temporary store, the offline MNIST in ../shared/data).

1. Throughput: a LeNet-5 run through the API (its worker process, streaming a point every 0.4 s with a
   held-out subset measured, the first-layer filters and the probe's top-5, a checkpoint and a full held-out
   evaluation each epoch) against a bare PyTorch loop of the same model, data, batch size and thread count
   with the same per-epoch held-out evaluation, as Keras' ``fit(validation_data=...)`` does. The bare loop
   runs before and after the run (its spread says how noisy the machine was). Goal: ≥ 0.9×.
2. Cheap requests while training: the p95 of LeNet-5 predictions on new digits (each image asked once, so
   every answer is computed) while idle and while the run trains. Goal: ≤ 3× idle, nothing fails.
3. Time to first streamed point after Start (a warm worker: the page readies one when the Train view opens).
   Goal: ≤ 2 s.

Run:  .venv/bin/python bench/bench_training.py [--epochs 2] [--train-size 8000] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from harness import REPO_ROOT, SHARED_DATA, live_server, wait_until  # the one harness (bench/harness.py)
from PIL import Image

from models.datasets import mnist  # noqa: E402

BARE_LOOP = r"""
import json, sys, time, math, torch, torch.nn.functional as F
from models.training import data as datasets
from models.training.config import for_architecture
from models.training.networks import build_network
args = json.loads(sys.argv[1])
torch.set_num_threads(1)
data = datasets.load("mnist", args["data_dir"], args["train_size"])
config = for_architecture("lenet5", augment=False, batch_size=args["batch_size"], epochs=args["epochs"])
model = build_network(config)
optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
steps = math.ceil(len(data.train_x) / config.batch_size)
schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=steps * config.epochs)
generator = torch.Generator().manual_seed(0)
start, images = time.perf_counter(), 0
for epoch in range(config.epochs):
    model.train()
    order = torch.randperm(len(data.train_x), generator=generator)
    for k in range(steps):
        index = order[k * config.batch_size:(k + 1) * config.batch_size]
        x = (data.train_x[index].float() / 255 - data.mean) / data.std
        loss = F.cross_entropy(model(x), data.train_y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        images += len(index)
    model.eval()
    with torch.no_grad():  # held-out accuracy once an epoch, as Keras' validation_data
        for lo in range(0, len(data.test_x), 1000):
            model((data.test_x[lo:lo + 1000].float() / 255 - data.mean) / data.std).argmax(1)
print(json.dumps({"images_per_s": images / (time.perf_counter() - start)}))
"""


def bare_loop(args: argparse.Namespace) -> float:
    job = json.dumps({"data_dir": str(SHARED_DATA), "train_size": args.train_size, "batch_size": args.batch_size,
                      "epochs": args.epochs})
    out = subprocess.run([sys.executable, "-c", BARE_LOOP, job], capture_output=True, text=True, cwd=REPO_ROOT,
                         env={"PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["images_per_s"]


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, math.ceil(0.95 * len(values)) - 1)]


def predictions(client: httpx.Client, image_ids: list[str]) -> tuple[list[float], int]:
    times, failures = [], 0
    for image_id in image_ids:
        started = time.perf_counter()
        answer = client.get(f"/api/models/lenet5/images/{image_id}/predictions")
        times.append(time.perf_counter() - started)
        failures += answer.status_code != 200
    return times, failures


def follow(base: str, run_id: str, started: float, seen: dict) -> None:
    """Read the run's event stream: when the first point came, and the last point."""
    with httpx.Client(base_url=base, timeout=None) as client, client.stream("GET", f"/api/training/runs/{run_id}/events") as stream:
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind == "point":
                seen.setdefault("first_point_s", time.perf_counter() - started)
                seen["last"] = json.loads(line[6:])
                seen["points"] = seen.get("points", 0) + 1
            elif kind == "end":
                return


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=8000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    images, _labels = mnist.load_mnist_test(SHARED_DATA)

    bare_before = bare_loop(args)
    with tempfile.TemporaryDirectory() as tmp, live_server(Path(tmp), env={
            "CONVSCOPE_DATA_DIR": str(SHARED_DATA), "CONVSCOPE_TRAINING_THREADS": "1"}, threads=1) as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        ids = [client.post("/api/images", files={"file": ("d.png", png(images[8000 + i]))}).json()["image_id"]
               for i in range(2 * args.requests)]
        idle, idle_failures = predictions(client, ids[: args.requests])
        wait_until(lambda: client.get("/api/training/runs").json()["ready"], 120,  # the Train view readies a worker
                   "a ready training worker", 0.2)
        seen: dict = {}
        started = time.perf_counter()
        run = client.post("/api/training/runs", json={"architecture": "lenet5", "epochs": args.epochs,
                                                      "train_size": args.train_size, "batch_size": args.batch_size,
                                                      "augment": False}).json()
        watcher = threading.Thread(target=follow, args=(server.url, run["id"], started, seen))
        watcher.start()
        wait_until(lambda: "first_point_s" in seen, 60, "the first point", 0.01)
        busy, busy_failures = predictions(client, ids[args.requests:])
        watcher.join()
        detail = client.get(f"/api/training/runs/{run['id']}").json()
    bare_after = bare_loop(args)

    bare = statistics.mean([bare_before, bare_after])
    run_ips = seen["last"]["images_per_s"]
    print(f"LeNet-5, MNIST test[:{args.train_size}], batch {args.batch_size}, {args.epochs} epochs, 1 thread, "
          f"no augmentation; run state {detail['state']}, {seen['points']} points streamed")
    print(f"throughput: run {run_ips:,.0f} images/s vs bare PyTorch loop {bare:,.0f} "
          f"(before {bare_before:,.0f}, after {bare_after:,.0f}): {run_ips / bare:.2f}×  (goal ≥ 0.9×)")
    print(f"cheap request p95 (LeNet-5 predictions, new digits): idle {1000 * p95(idle):.1f} ms, while training "
          f"{1000 * p95(busy):.1f} ms: {p95(busy) / p95(idle):.2f}×  (goal ≤ 3×); failures {idle_failures + busy_failures}")
    print(f"time to first streamed point after Start: {seen['first_point_s']:.2f} s  (goal ≤ 2 s)")
    print(f"held-out accuracy after {args.epochs} epochs: {detail['history'][-1]['val_accuracy']:.4f}")


if __name__ == "__main__":
    main()
