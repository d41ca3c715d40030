"""Deletion + insertion curves for one method (k = 20: 42 images) vs 42 single-image forward passes.

Goal (issue 23): the curves cost at most 0.8x the time of 42 single-image forwards of the same model, on the
same input, measured interleaved in one run. Excluded, as the issue says: the saliency map (computed
before) and the random-order baseline (a second, identical-cost call). The curves are
``server.services.trust.deletion.curves``, exactly what deletion.json runs, with the app's batch size.

Run: .venv/bin/python bench/bench_trust.py [--models lenet5 tinyvgg-shapes efficientnet_lite0] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.services.runtime.model_runtime import ModelRuntime  # noqa: E402
from server.services.trust.deletion import baseline_input, curves, map_order  # noqa: E402
from server.settings import Settings, resolve_device  # noqa: E402

K = 20


def bench_model(runtime: ModelRuntime, model_id: str, repeats: int, batch_size: int) -> tuple[float, float]:
    loaded = runtime.load(model_id)
    entry = loaded.entry
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1, entry.input.channels, entry.input.height, entry.input.width, generator=generator).to(loaded.device)
    base = baseline_input(x, "blur")
    order = map_order(np.random.default_rng(0).random((entry.input.height, entry.input.width)), 0)
    with torch.inference_mode():
        target = int(loaded.module(x)[0].argmax())

    def sync() -> None:
        if loaded.device.type == "cuda":
            torch.cuda.synchronize()

    def singles() -> None:
        with torch.inference_mode():
            for _ in range(2 * (K + 1)):
                torch.softmax(loaded.module(x), dim=-1)[0, target].item()
        sync()

    def ours() -> None:
        curves(loaded.module, x, base, order, target, K, batch_size)
        sync()

    singles(), ours()  # warm-up
    single_times, our_times = [], []
    for _ in range(repeats):  # interleaved
        for fn, times in ((singles, single_times), (ours, our_times)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(single_times), statistics.median(our_times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["lenet5", "tinyvgg-shapes", "efficientnet_lite0"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    settings = Settings()
    device = resolve_device(args.device)
    runtime = ModelRuntime(device)
    print(f"device {device}, torch threads {torch.get_num_threads()}, batch {settings.deletion_batch_size}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'model':<22}{'42 singles (s)':>16}{'curves (s)':>12}{'ratio':>8}  goal <= 0.8")
    for model_id in args.models:
        single, ours = bench_model(runtime, model_id, args.repeats, settings.deletion_batch_size)
        print(f"{model_id:<22}{single:>16.4f}{ours:>12.4f}{ours / single:>8.2f}  {'ok' if ours <= 0.8 * single else 'OVER'}")


if __name__ == "__main__":
    main()
