"""Feature-map atlas of ResNet-18's conv1 (64×112×112) for one image: server time from request to complete
response, cold (no cached activations: one forward pass) and warm, against baselines measured in the same
run — the bare forward pass, and the same values serialised as a JSON list of floats (time and bytes).

Run: .venv/bin/python bench/bench_atlas.py [--repeats N]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

warnings.filterwarnings("ignore", message="Using `httpx`")

from fastapi.testclient import TestClient  # noqa: E402

from server.main import create_app  # noqa: E402
from server.services.feature_maps.activations import ActivationStore  # noqa: E402
from server.services.feature_maps.layer_overview import LayerOverviews  # noqa: E402
from server.settings import Settings  # noqa: E402

PHOTO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "images" / "cat.jpg"


def _picture() -> bytes:
    if PHOTO.is_file():
        return PHOTO.read_bytes()
    from PIL import Image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    n = args.repeats

    with tempfile.TemporaryDirectory() as tmp, TestClient(create_app(Settings(storage_dir=Path(tmp)))) as client:
        app = client.app
        image_id = client.post("/api/images", files={"file": ("cat.jpg", _picture(), "image/jpeg")}).json()["image_id"]
        base = f"/api/models/resnet18/images/{image_id}"
        q = "?weights=untrained"
        png_url, json_url = f"{base}/layers/conv1/atlas.png{q}", f"{base}/layers/conv1/atlas.json{q}"
        npy_url, stats_url = f"{base}/layers/conv1/activations.npy{q}", f"{base}/layers/conv1/stats.json{q}"
        client.get(png_url)  # loads the model and the input tensor: not part of either measurement

        def reset_caches() -> None:
            app.state.activations = ActivationStore(app.state.settings.activation_cache_bytes)
            app.state.layer_overviews = LayerOverviews()

        loaded = app.state.runtime.load("resnet18", "untrained")
        batch = app.state.inputs.batch(loaded, image_id)
        with torch.no_grad():
            loaded.module(batch)

        def forward_once() -> float:
            with torch.no_grad():
                t0 = time.perf_counter()
                loaded.module(batch)
                return time.perf_counter() - t0

        # interleaved, so that the shared machine's load falls on every measurement alike
        cold_png, cold_both, warm_png, warm_json, warm_both, forward = [], [], [], [], [], []
        for _ in range(n):
            forward.append(forward_once())
            reset_caches()
            t0 = time.perf_counter()
            png = client.get(png_url)
            cold_png.append(time.perf_counter() - t0)
            reset_caches()
            t0 = time.perf_counter()
            client.get(png_url)
            client.get(json_url)
            cold_both.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            png = client.get(png_url)
            t1 = time.perf_counter()
            meta = client.get(json_url)
            t2 = time.perf_counter()
            warm_png.append(t1 - t0)
            warm_json.append(t2 - t1)
            warm_both.append(t2 - t0)
        assert png.status_code == 200 and meta.status_code == 200
        npy = client.get(npy_url).content
        stats = client.get(stats_url).content
        channel_npy = client.get(f"{base}/layers/conv1/channels/0.npy{q}").content
        values = np.load(io.BytesIO(npy), allow_pickle=False)
        json_times, json_bytes = [], b""
        for _ in range(max(3, n // 3)):
            t0 = time.perf_counter()
            json_bytes = json.dumps(values.tolist()).encode()
            json_times.append(time.perf_counter() - t0)
        rounded = json.dumps(np.round(values.astype(np.float64), 6).tolist()).encode()

    atlas_bytes = len(png.content) + len(meta.content)
    print(f"ResNet-18 conv1 {tuple(values.shape)}, one image, {n} repeats, medians; in-process requests "
          f"(TestClient: routing, validation, headers included), CPU threads={torch.get_num_threads()}")
    print(f"  cold atlas.png (forward pass + all-layer summaries + render)   {_median_ms(cold_png):8.1f} ms")
    print(f"  cold atlas.png + atlas.json                                     {_median_ms(cold_both):8.1f} ms")
    print(f"  warm atlas.png                                                  {_median_ms(warm_png):8.1f} ms")
    print(f"  warm atlas.json                                                 {_median_ms(warm_json):8.1f} ms")
    print(f"  warm atlas.png + atlas.json (complete atlas response)           {_median_ms(warm_both):8.1f} ms")
    print(f"  baseline: bare forward pass of ResNet-18                        {_median_ms(forward):8.1f} ms")
    print(f"  baseline: json.dumps of the same values (server-side only)      {_median_ms(json_times):8.1f} ms")
    print(f"  ratio cold atlas / bare forward pass                            {statistics.median(cold_png) / statistics.median(forward):8.2f}x")
    print(f"  ratio warm complete atlas / JSON serialisation alone            {statistics.median(warm_both) / statistics.median(json_times):8.2f}x")
    print("bytes")
    print(f"  atlas.png {len(png.content):,} + atlas.json {len(meta.content):,} = {atlas_bytes:,}")
    print(f"  stats.json {len(stats):,}; activations.npy {len(npy):,}; one channel .npy (hover) {len(channel_npy):,}")
    print(f"  JSON float list: full precision {len(json_bytes):,}; rounded to 6 decimals {len(rounded):,}")
    print(f"  ratio (atlas.png + atlas.json) / JSON full                      {atlas_bytes / len(json_bytes):8.3f}")
    print(f"  ratio (atlas.png + atlas.json) / JSON 6 decimals                {atlas_bytes / len(rounded):8.3f}")
    page_bytes = atlas_bytes + len(stats) + len(channel_npy)
    print(f"  ratio what the page fetches (atlas + stats + one hovered channel) / JSON full  {page_bytes / len(json_bytes):8.3f}")
    print(f"  ratio (atlas + whole activations.npy) / JSON full               {(atlas_bytes + len(npy)) / len(json_bytes):8.3f}")


if __name__ == "__main__":
    main()
