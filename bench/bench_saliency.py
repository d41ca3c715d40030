"""Predictions + Grad-CAM for the top-5 classes vs one bare forward pass, and vs the peers.

For each model (untrained weights are fine for timing) this times, interleaved and in one run:
  bare      one ``model(x)`` forward in inference mode (the baseline)
  ours      predictions + top-5 Grad-CAM maps at input resolution (server.services.saliency.topk)
  pgc-loop  pytorch-grad-cam GradCAM, 5 calls with one ClassifierOutputTarget each
  pgc-batch pytorch-grad-cam GradCAM, one call on the image repeated 5× with the 5 targets
  captum    Captum LayerGradCam, 5 calls (one per class), upsampled with LayerAttribution.interpolate
and prints medians, ratios to the bare forward, and our speed-up over each peer. Goal: ours ≤ 1.3× bare.

Run: .venv/bin/python bench/bench_saliency.py [--models resnet18 vgg16 resnet50] [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.services.runtime.model_runtime import ModelRuntime  # noqa: E402
from server.services.saliency.topk import predictions_with_saliency  # noqa: E402

K = 5


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def bench_model(runtime: ModelRuntime, model_id: str, repeats: int, peer_repeats: int) -> dict[str, float]:
    from captum.attr import LayerAttribution, LayerGradCam
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    loaded = runtime.load(model_id, "untrained")
    entry = loaded.entry
    x = torch.randn(
        1, entry.input.channels, entry.input.height, entry.input.width, generator=torch.Generator().manual_seed(0)
    )
    with torch.inference_mode():
        top = [int(i) for i in loaded.module(x)[0].topk(K).indices]

    peer_model = copy.deepcopy(loaded.module)  # the peers backpropagate into weights: give them their own copy
    for p in peer_model.parameters():
        p.requires_grad_(True)
    peer_layer = dict(peer_model.named_modules())[entry.target_layer]
    size = tuple(x.shape[-2:])

    def bare() -> None:
        with torch.inference_mode():
            loaded.module(x)

    def ours() -> None:
        answer = predictions_with_saliency(loaded, x, k=K)
        assert len(answer.explanation.maps) == K

    pgc = GradCAM(model=peer_model, target_layers=[peer_layer])

    def pgc_loop() -> None:
        for c in top:
            pgc(input_tensor=x, targets=[ClassifierOutputTarget(c)])

    def pgc_batch() -> None:
        pgc(input_tensor=x.repeat(K, 1, 1, 1), targets=[ClassifierOutputTarget(c) for c in top])

    captum = LayerGradCam(peer_model, peer_layer)

    def captum_calls() -> None:
        for c in top:
            attribution = captum.attribute(x, target=c, relu_attributions=True)
            LayerAttribution.interpolate(attribution, size, interpolate_mode="bilinear")

    for fn in (bare, ours, pgc_loop, pgc_batch, captum_calls)[: 5 if peer_repeats else 2]:  # warm-up
        fn()
    results: dict[str, list[float]] = {"bare": [], "ours": [], "pgc-loop": [], "pgc-batch": [], "captum": []}
    # Interleave rounds so that a burst of load from other processes hits every contender alike.
    per_round = max(1, repeats // max(1, peer_repeats))
    for _ in range(max(1, peer_repeats)):
        for _ in range(per_round):  # bare and ours alternate call by call, so load bursts hit both
            results["bare"] += timed(bare, 1)
            results["ours"] += timed(ours, 1)
        if peer_repeats:
            results["pgc-loop"] += timed(pgc_loop, 1)
            results["pgc-batch"] += timed(pgc_batch, 1)
            results["captum"] += timed(captum_calls, 1)
    pgc.activations_and_grads.release()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "vgg16", "resnet50"])
    parser.add_argument("--repeats", type=int, default=9, help="timed runs of bare/ours per model")
    parser.add_argument(
        "--peer-repeats", type=int, default=3, help="interleaved rounds (peers run once a round); 0: ours vs bare only"
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    runtime = ModelRuntime(torch.device("cpu"))
    print(f"torch {torch.__version__}, {args.threads} threads, CPU, untrained weights, k={K}")
    print("The machine is shared, so each figure is given twice: from the fastest run of each contender (its")
    print("cost when undisturbed) and from the median run. Ratios are to the bare forward of the same run.")
    header = (
        f"{'model':<10} {'stat':<6} {'bare ms':>8} {'ours ms':>8} {'ours/bare':>9} {'pgc-loop':>9} {'pgc-batch':>9} "
        f"{'captum':>8}   our speed-up over pgc-loop / pgc-batch / captum"
    )
    print(header)
    for model_id in args.models:
        runs = bench_model(runtime, model_id, args.repeats, args.peer_repeats)
        paired = statistics.median(o / b for o, b in zip(runs["ours"], runs["bare"]))
        print(f"{model_id:<10} paired median of ours/bare over {len(runs['ours'])} alternating calls: {paired:.2f}×")
        if not runs["captum"]:
            continue
        for stat, reduce in (("min", min), ("median", statistics.median)):
            r = {name: reduce(times) for name, times in runs.items()}
            bare = r["bare"]
            print(
                f"{model_id:<10} {stat:<6} {bare * 1e3:8.1f} {r['ours'] * 1e3:8.1f} {r['ours'] / bare:8.2f}× "
                f"{r['pgc-loop'] / bare:8.2f}× {r['pgc-batch'] / bare:8.2f}× {r['captum'] / bare:7.2f}×   "
                f"{r['pgc-loop'] / r['ours']:.1f}× / {r['pgc-batch'] / r['ours']:.1f}× / {r['captum'] / r['ours']:.1f}×",
                flush=True,
            )
    print("goal: ours/bare ≤ 1.3× (predictions + top-5 Grad-CAM maps at input resolution vs one model(x))")


if __name__ == "__main__":
    main()
