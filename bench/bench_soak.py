"""Resident memory of a real uvicorn over passes of ordinary mixed requests (issue 21 §1).

The server runs as ``convscope serve`` does (bench/serve_with_stats.py, its own process). Each pass sends,
for every one of N images: the upload (the same bytes again), predictions, a layer's atlas, a Grad-CAM map and
a step-through trace of a convolution, on a real ImageNet model (EfficientNet-Lite0 by default) and LeNet-5.
The images are crops of the real photos in ../shared/data/images at sizes from 160 to 640 px, so the caches
fill, evict and refill as under a class. After each pass it prints the server's RSS, what its caches say they
hold, and the sum of their budgets. Goals: RSS after the last pass within 10 % of RSS after pass 3, and below
the sum of the cache budgets + the loaded models' parameters + 500 MB.

Each pass also prints the live tensors (by distinct storage, counted without a collection) and glibc's own
account (in use, free inside its heaps, mmapped): live tensors that grow while the caches do not are objects
kept alive, not the allocator. ``--garbage`` shows what a full gc collection would free after each pass (how
the reference cycle of issue 21 was found), ``--stray`` live tensors that no cache or model holds, and
``--trace`` the Python allocations grown from pass 3 (tracemalloc).

Run: .venv/bin/python bench/bench_soak.py [--passes 10] [--images 120] [--env MALLOC_ARENA_MAX=8 ...]
(``--repo`` serves another checkout, e.g. main's code for the "before" figures.)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil
from harness import SHARED_DATA, free_port, wait_until  # bench/harness.py (puts the repository root on sys.path)
from PIL import Image

HERE = Path(__file__).resolve().parent
PHOTOS = SHARED_DATA / "images"
PHOTO_MODEL = ("efficientnet_lite0", "blocks.2", "conv_stem")  # model, atlas layer, traced convolution
DIGIT_MODEL = ("lenet5", "features.0", "features.3")
MB = 2**20
START_TIMEOUT_S = 600  # a loaded 2-core machine can take minutes to import torch


def photo_crops(count: int, seed: int = 0) -> list[bytes]:
    """``count`` distinct JPEGs: random crops of the real photos, resized to 160–640 px."""
    rng = np.random.default_rng(seed)
    photos = [Image.open(p).convert("RGB") for p in sorted(PHOTOS.glob("*")) if p.suffix in (".jpg", ".png")]
    out = []
    for i in range(count):
        photo = photos[i % len(photos)]
        w, h = photo.size
        side = int(rng.integers(min(w, h) // 2, min(w, h)))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        size = int(rng.integers(160, 641))
        crop = photo.crop((x, y, x + side, y + side)).resize((size, size))
        buf = io.BytesIO()
        crop.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


@dataclass
class Server:
    proc: subprocess.Popen
    base: str

    def ask(self, command: str) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def rss_mb(self) -> float:
        return psutil.Process(self.proc.pid).memory_info().rss / MB

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # serve_with_stats stops the server at the end of its input
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start(repo: Path, storage: Path, env: dict[str, str]) -> Server:
    port = free_port()
    # one client sends every upload here (240 a pass): the per-address upload quota (issue 21 §3) is off
    quota_off = {"CONVSCOPE_UPLOAD_QUOTA_COUNT": "0", "CONVSCOPE_UPLOAD_QUOTA_BYTES": str(2**40)}
    full_env = {**os.environ, "CONVSCOPE_STORAGE_DIR": str(storage), "PYTHONPATH": str(repo), **quota_off, **env}
    proc = subprocess.Popen([sys.executable, str(repo / "bench" / "serve_with_stats.py"), str(port)], cwd=repo, env=full_env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            return httpx.get(base + "/api/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, START_TIMEOUT_S, "the server to start", poll_s=0.3)
    except AssertionError:
        proc.kill()
        raise
    return Server(proc, base)


def one_pass(client: httpx.Client, images: list[bytes], digits: list[bytes]) -> list[str]:
    """The mix for every image; returns the failures (status codes other than 200/201)."""
    failures = []
    for data, digit in zip(images, digits):
        for picture, (model, atlas_layer, conv) in ((data, PHOTO_MODEL), (digit, DIGIT_MODEL)):
            r = client.post("/api/images", files={"file": ("x.jpg", picture, "image/jpeg")})
            if r.status_code not in (200, 201):
                failures.append(f"upload {r.status_code}")
                continue
            base = f"/api/models/{model}/images/{r.json()['image_id']}"
            for path, params in ((f"{base}/predictions", {}),
                                 (f"{base}/layers/{atlas_layer}/atlas.png", {}),
                                 (f"{base}/saliency.npy", {"method": "gradcam"}),
                                 (f"{base}/layers/{conv}/trace", {"channel": 1, "y": 3, "x": 3})):
                r = client.get(path, params=params)
                if r.status_code != 200:
                    failures.append(f"{path.rsplit('/', 1)[-1]} {r.status_code}")
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=HERE.parent)
    parser.add_argument("--passes", type=int, default=10)
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--garbage", action="store_true", help="what a full gc collection frees after each pass")
    parser.add_argument("--stray", action="store_true", help="list live tensors no cache holds, and their holders")
    parser.add_argument("--trace", action="store_true", help="tracemalloc: Python allocations grown from pass 3")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server's environment")
    args = parser.parse_args()
    import tempfile

    env = dict(item.split("=", 1) for item in args.env)
    if args.trace:
        env.setdefault("PYTHONTRACEMALLOC", "1")
    images = photo_crops(args.images)
    rng = np.random.default_rng(1)
    digits = []
    for _ in range(args.images):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(buf, format="PNG")
        digits.append(buf.getvalue())
    with tempfile.TemporaryDirectory() as tmp:
        server = start(args.repo.resolve(), Path(tmp) / "images", env)
        try:
            print(f"server: {args.repo}  env: {env or 'as convscope serve'}  load average: {os.getloadavg()}")
            print(f"{args.passes} passes over {args.images} photo crops + {args.images} digits; "
                  f"per image: upload, predictions, atlas, Grad-CAM, trace")
            rss: list[float] = []
            memory: dict = {}
            with httpx.Client(base_url=server.base, timeout=300) as client:
                for n in range(1, args.passes + 1):
                    started = time.monotonic()
                    failures = one_pass(client, images, digits)
                    memory = server.ask("memory")
                    rss.append(server.rss_mb())
                    live = server.ask("tensors")
                    if args.garbage:
                        print("         cyclic garbage:", server.ask("garbage"), flush=True)
                    if args.stray:
                        print("         not in any cache:", server.ask("stray"), flush=True)
                    if args.trace and n in (3, args.passes):
                        server.ask(f"trace p{n}")
                    print(f"pass {n:2d}: RSS {rss[-1]:7.1f} MB   caches hold {memory['cache_bytes'] / MB:6.1f} MB"
                          f" of {memory['cache_budget_bytes'] / MB:6.1f} MB   models {memory['model_bytes'] / MB:6.1f} MB"
                          f"   {time.monotonic() - started:5.1f} s   failures {len(failures)} {sorted(set(failures))[:3]}",
                          flush=True)
                    heap = live["malloc"]
                    print(f"         live tensors {live['count']:5d} = {live['bytes'] / MB:6.1f} MB {live['kinds']}"
                          + (f"   malloc: in use {heap['in_use_bytes'] / MB:.0f} MB, free in heaps "
                             f"{heap['free_in_heap_bytes'] / MB:.0f} MB, mmapped {heap['mmapped_bytes'] / MB:.0f} MB"
                             if heap and not env.get("LD_PRELOAD") else ""), flush=True)
                if args.trace:
                    print("Python allocations grown from pass 3 to the last:",
                          *server.ask(f"trace p3 p{args.passes}").get("growth", []), sep="\n  ")
                time.sleep(10)
                idle = server.rss_mb()
        finally:
            server.stop()
    print("caches:", ", ".join(f"{name} {held / MB:.1f}/{budget / MB:.0f} MB"
                               for name, (held, budget) in sorted(memory["caches"].items())))
    ceiling = (memory["cache_budget_bytes"] + memory["model_bytes"]) / MB + 500
    third = rss[min(2, len(rss) - 1)]
    growth = (rss[-1] - third) / third
    print(f"RSS after pass {len(rss)}: {rss[-1]:.1f} MB; after pass 3: {third:.1f} MB; growth {100 * growth:+.1f} % "
          f"(goal within ±10 %); after 10 s idle: {idle:.1f} MB")
    print(f"ceiling = cache budgets {memory['cache_budget_bytes'] / MB:.0f} MB + models {memory['model_bytes'] / MB:.0f} MB"
          f" + 500 MB = {ceiling:.0f} MB: {'below' if rss[-1] < ceiling else 'ABOVE'}")
    print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
