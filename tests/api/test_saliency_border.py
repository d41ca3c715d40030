"""The border check of saliency answers (issue 20 §1): the outer ring of the map's own grid holds more than
1.5× its share of the area in positive mass and the peak is in it → a warning and a deeper layer to offer.
Checked against a plain-numpy recomputation from the served raw map, on a real photo where the former
default (blocks.5) shows the artefact, and on hand-made maps."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from server.services.saliency.border import border_check, deeper_layer

pytest.importorskip("timm")


def reference(raw: np.ndarray) -> dict:
    """The check written out plainly: the ring is the first and last row and column."""
    h, w = raw.shape
    positive = np.maximum(raw.astype(np.float64), 0)
    ring_cells = [(0, j) for j in range(w)] + [(h - 1, j) for j in range(w)]
    ring_cells += [(i, 0) for i in range(1, h - 1)] + [(i, w - 1) for i in range(1, h - 1)]
    ring_cells = list(dict.fromkeys(ring_cells))
    ring_mass = sum(positive[c] for c in ring_cells)
    ring_share = ring_mass / positive.sum() if positive.sum() > 0 else 0.0
    area_share = len(ring_cells) / (h * w)
    top = np.unravel_index(np.argmax(raw), raw.shape)
    peak_in_ring = bool(positive.sum() > 0 and (top[0] in (0, h - 1) or top[1] in (0, w - 1)))
    return {"ring_share": ring_share, "area_share": area_share, "peak_in_ring": peak_in_ring,
            "warning": peak_in_ring and ring_share > 1.5 * area_share}


def test_hand_made_maps() -> None:
    corner = np.zeros((7, 7), np.float32)
    corner[0, 0], corner[3, 3] = 5.0, 1.0
    check = border_check(corner, "a", "b")
    assert check["warning"] and check["peak_in_ring"] and check["deeper_layer"] == "b"
    assert check["area_share"] == pytest.approx(24 / 49) and check["ring_share"] == pytest.approx(5 / 6)
    centre = corner.copy()
    centre[3, 3] = 9.0
    assert not border_check(centre, "a", "b")["warning"] and border_check(centre, "a", "b")["deeper_layer"] is None
    # the peak on the ring but the ring holding only its share of the mass: no warning
    spread = np.ones((7, 7), np.float32)
    spread[0, 3] = 1.01
    assert border_check(spread, "a", "b")["peak_in_ring"] and not border_check(spread, "a", "b")["warning"]
    assert not border_check(np.full((2, 2), 3.0), "a", "b")["warning"]  # all ring: never flagged
    assert not border_check(-np.ones((7, 7)), "a", "b")["peak_in_ring"]  # no positive mass at all
    for raw in (corner, centre, spread, np.random.default_rng(0).normal(size=(14, 9))):
        got = border_check(raw, "a", "b")
        want = reference(raw)
        assert got["ring_share"] == pytest.approx(want["ring_share"]) and got["area_share"] == pytest.approx(want["area_share"])
        assert (got["peak_in_ring"], got["warning"]) == (want["peak_in_ring"], want["warning"])


def test_deeper_layer_is_the_default_when_the_layer_runs_before_it() -> None:
    order = ["conv1", "layer1", "layer1.0", "layer4", "layer4.0", "layer4.0.conv1", "fc"]
    assert deeper_layer(order, "layer1.0", "layer4") == "layer4"
    assert deeper_layer(order, "layer4.0.conv1", "layer4") == "layer4"  # inside the default block
    assert deeper_layer(order, "layer4", "layer4") is None
    assert deeper_layer(order, "fc", "layer4") is None


@pytest.fixture(scope="module")
def cat(module_client: TestClient, shared_data: Path) -> str:
    data = (shared_data / "images" / "cat.jpg").read_bytes()
    return module_client.post("/api/images", files={"file": ("cat.jpg", data)}).json()["image_id"]


def raw_map(client: TestClient, base: str, **params: object) -> np.ndarray:
    response = client.get(f"{base}/raw.npy", params=params)
    assert response.status_code == 200, response.text
    return np.load(io.BytesIO(response.content), allow_pickle=False)


@pytest.mark.parametrize(("layer", "warned"), [("blocks.5", True), (None, False)], ids=["blocks.5", "default"])
def test_the_answer_matches_numpy_on_a_real_photo(module_client: TestClient, cat: str, layer: str | None,
                                                  warned: bool) -> None:
    """The tabby at blocks.5 (the former default) peaks in a corner with the ring heavy: warned, and
    conv_head is offered; at the default layer it is not."""
    base = f"/api/models/efficientnet_lite0/images/{cat}/saliency"
    params = {"layer": layer} if layer else {}
    answer = module_client.get(f"{base}.json", params=params).json()
    border = answer["map"]["border"]
    raw = raw_map(module_client, base, **params)
    assert border["grid"] == list(raw.shape) == [7, 7]
    want = reference(raw)
    assert border["ring_share"] == pytest.approx(want["ring_share"], rel=1e-5)
    assert border["area_share"] == pytest.approx(want["area_share"])
    assert (border["peak_in_ring"], border["warning"]) == (want["peak_in_ring"], want["warning"]) == (warned, warned)
    assert border["deeper_layer"] == ("conv_head" if warned else None)
    assert border["layer"] == answer["layer"]
    for entry in module_client.get(f"{base}/topk.json", params={**params, "k": 3}).json()["classes"]:
        raw_k = raw_map(module_client, base, **params, target=entry["index"])
        assert entry["border"]["warning"] == reference(raw_k)["warning"]


def test_methods_without_a_layer_have_no_border_check(module_client: TestClient, cat: str) -> None:
    answer = module_client.get(f"/api/models/efficientnet_lite0/images/{cat}/saliency.json",
                               params={"method": "gradient"}).json()
    assert answer["map"]["border"] is None
