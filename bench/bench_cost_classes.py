"""Where the cheap/heavy boundary lies: the time of every kind of model work on every model, measured.

The scheduler (server/services/work/scheduler.py) sends a label's work to the heavy pool once its measured mean
is at least ``Settings.heavy_threshold_s``; this prints, per model and kind of work, one run's seconds (the
fastest of ``--repeats``) and the pool the default threshold puts it in, so the threshold can be set in
the widest gap between what a page does on every click (predictions, feature maps, traces, Grad-CAM) and
what takes many passes (Score-CAM, occlusion, SmoothGrad, integrated gradients).

Run: .venv/bin/python bench/bench_cost_classes.py [--models lenet5 tinyvgg-shapes resnet18] [--repeats 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.services.feature_maps.activations import capture_layers  # noqa: E402
from server.services.runtime.model_runtime import ModelRuntime  # noqa: E402
from server.services.saliency import get_method  # noqa: E402
from server.services.step_through import trace as conv_trace  # noqa: E402
from server.settings import Settings  # noqa: E402

LIGHT = ("forward", "capture", "trace", "gradcam", "gradient")
HEAVY = ("scorecam", "occlusion", "smoothgrad", "integrated-gradients")


def run(kind: str, loaded, x: torch.Tensor) -> None:  # noqa: ANN001
    layer = loaded.entry.target_layer
    if kind == "forward":
        with torch.inference_mode():
            loaded.module(x)
    elif kind == "capture":
        capture_layers(loaded, x)
    elif kind == "trace":
        conv_trace.capture(loaded, x, layer)
    else:
        get_method(kind).explain(loaded, x, layer if get_method(kind).uses_layer else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["lenet5", "tinyvgg-shapes", "resnet18", "resnet50"])
    parser.add_argument("--heavy-models", nargs="+", default=["lenet5", "tinyvgg-shapes", "resnet18"],
                        help="models on which the many-pass methods are timed too")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    threshold = Settings().heavy_threshold_s
    runtime = ModelRuntime(torch.device("cpu"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; heavy_threshold_s = {threshold}")
    print(f"{'model':<16} {'work':<22} {'seconds':>9}  pool")
    cheap_max, heavy_min = 0.0, float("inf")
    for model_id in args.models:
        loaded = runtime.load(model_id, "untrained")
        spec = loaded.entry.input
        x = torch.rand(1, spec.channels, spec.height, spec.width, generator=torch.Generator().manual_seed(0))
        kinds = LIGHT + (HEAVY if model_id in args.heavy_models else ())
        for kind in kinds:
            run(kind, loaded, x) if kind in LIGHT else None  # warm-up for the cheap kinds
            best = float("inf")
            for _ in range(args.repeats if kind in LIGHT else 1):
                start = time.perf_counter()
                run(kind, loaded, x)
                best = min(best, time.perf_counter() - start)
            pool = "heavy" if best >= threshold else "cheap"
            if kind in LIGHT:
                cheap_max = max(cheap_max, best)
            else:
                heavy_min = min(heavy_min, best)
            print(f"{model_id:<16} {kind:<22} {best:9.3f}  {pool}", flush=True)
    print(f"slowest per-click kind: {cheap_max:.3f} s; fastest many-pass kind: {heavy_min:.3f} s")


if __name__ == "__main__":
    main()
