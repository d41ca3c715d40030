"""One forward result per (model, weights, image): predictions keep the graph from the default saliency layer,
so the top classes' Grad-CAMs and the top-k that follow run no forward pass of their own — and give the
same maps as a Grad-CAM computed from scratch."""

from __future__ import annotations

import io

import numpy as np
import torch

from server.services.saliency import get_method
from tests.conftest import png_bytes

MODEL = "tinyvgg-shapes"


def _npy(content: bytes) -> np.ndarray:
    return np.load(io.BytesIO(content), allow_pickle=False)


def test_predictions_then_five_maps_then_topk_run_one_forward(client, upload) -> None:
    rng = np.random.default_rng(3)
    image_id = upload(client, png_bytes(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)))
    state = client.app.state
    loaded = state.runtime.load(MODEL, "untrained")
    calls: list[int] = []
    handle = loaded.module.register_forward_pre_hook(lambda _m, _i: calls.append(1))
    try:
        base = f"/api/models/{MODEL}/images/{image_id}"
        preds = client.get(f"{base}/predictions", params={"weights": "untrained", "top_k": 5})
        assert preds.status_code == 200 and preds.headers["x-convscope-weights"] == "untrained"
        assert len(calls) == 1
        maps = {}
        for p in preds.json()["predictions"]:
            r = client.get(f"{base}/saliency.npy", params={"weights": "untrained", "target": p["index"]})
            assert r.status_code == 200 and r.headers["x-convscope-weights"] == "untrained"
            maps[p["index"]] = _npy(r.content)
        assert len(calls) == 1  # the maps came from the predictions' kept pass and one batched backward
        top = client.get(f"{base}/saliency/topk.json", params={"weights": "untrained"})
        assert top.status_code == 200
        assert [c["index"] for c in top.json()["classes"]] == [p["index"] for p in preds.json()["predictions"]]
        assert len(calls) == 1  # and the top-k read the cache
    finally:
        handle.remove()
    x = state.inputs.batch(loaded, image_id)
    for target, got in maps.items():
        fresh = get_method("gradcam").explain(loaded, x, loaded.entry.target_layer, [target])
        np.testing.assert_allclose(got, fresh.maps[0].values.numpy(), rtol=1e-4, atol=1e-4)
    # the predictions equal a plain forward pass
    with torch.inference_mode():
        probs = torch.softmax(loaded.module(x)[0], dim=-1)
    for p in preds.json()["predictions"]:
        assert abs(p["probability"] - float(probs[p["index"]])) < 1e-5
