"""The Network view: columns as the API lists them, hover edges by receptive field, units opened in place
(step-through, dense view, softmax) with a way back, "+N more", what a channel looks for; time to first paint."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from tests.browser.page_helpers import api, query

pytestmark = pytest.mark.browser


def _upload(page, data: bytes, name: str = "image.png") -> str:
    response = page.request.post("/api/images", multipart={"file": {"name": name, "mimeType": "image/png", "buffer": data}})
    assert response.status == 201, response.text()
    return response.json()["image_id"]


def _digit(page) -> str:
    response = page.request.get("/api/samples/mnist-test-0.png")
    if not response.ok:
        pytest.skip("no MNIST test images")
    return _upload(page, response.body())


def _open(page, url: str) -> dict:
    page.goto(url)
    page.wait_for_selector(".net[data-ready='1']")
    return page.evaluate("() => ({...document.querySelector('.net').dataset, sincePage: performance.now()})")


def _hover_tile(page, layer: str, nth: int = 0, fx: float = 0.5, fy: float = 0.5) -> str:
    tile = page.locator(f".net-col[data-layer='{layer}'] .net-tile").nth(nth)
    tile.scroll_into_view_if_needed()
    box = tile.locator("canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
    return page.text_content(".net-readout")


def test_lenet_columns_edges_and_details(page, shots: Path) -> None:
    page.goto("/")
    image = _digit(page)
    timing = _open(page, f"/?model=lenet5&image={image}&view=network")
    truth = api(page, f"/api/models/lenet5/images/{image}/network.json")
    names = page.eval_on_selector_all(".net-col[data-layer]", "cs => cs.map(c => c.dataset.layer)")
    assert names == ["@input"] + [c["name"] for c in truth["columns"]] + ["@softmax"]
    for column in truth["columns"]:
        shown = page.eval_on_selector_all(f".net-col[data-layer='{column['name']}'] [data-channel]",
                                          "us => us.map(u => Number(u.dataset.channel))")
        assert shown == [u["channel"] for u in column["shown"]]
    page.screenshot(path=str(shots / "network-lenet5-1280x720.png"))

    # a conv reads a 5×5 window of every channel of the layer before it: one box per shown input channel
    text = _hover_tile(page, "features.3", 0, 0.55, 0.55)
    assert "reads a 5×5 window of 6 channels of features.2" in text, text
    assert page.locator(".net-edges .net-edge-box").count() == 6
    assert page.locator(".net-edges .net-edge").count() == 6
    # the box drawn on an input tile is 5/14 of its side (a 5×5 window of a 14×14 map)
    side = page.locator(".net-col[data-layer='features.2'] .net-tile canvas").first.bounding_box()["width"]
    rect = page.locator(".net-edges .net-edge-box").first.bounding_box()
    assert rect["width"] == pytest.approx(side * 5 / 14, abs=2.5)
    page.screenshot(path=str(shots / "network-lenet5-hover-1280x720.png"))
    # an activation reads one cell of its own channel; the first conv reads the input image
    assert "reads a 1×1 window of 1 channel of features.0" in _hover_tile(page, "features.1", 2)
    assert page.locator(".net-edges .net-edge-box").count() == 1
    assert "5×5 window of 1 channel of the input image" in _hover_tile(page, "features.0", 0, 0.5, 0.5)

    # click a conv unit: its step-through opens in place on the hovered cell, and Back returns
    _hover_tile(page, "features.3", 1, 0.25, 0.75)
    channel = page.get_attribute(".net-col[data-layer='features.3'] .net-tile >> nth=1", "data-channel")
    page.mouse.down()  # click where the pointer is (a cell near the bottom left)
    page.mouse.up()
    page.wait_for_selector("#stepper-canvas[data-ready='1']")
    state = query(page)
    assert (state["open"], state["layer"], state["channel"]) == ("unit", "features.3", channel)
    assert page.get_attribute("#stepper-canvas", "data-cell") == state["pos"] == "7,2"
    assert page.is_hidden(".net")
    page.click(".net-back")
    page.wait_for_selector(".net[data-ready='1']:visible")
    assert "open" not in query(page)

    # browser back/forward reproduce the detail (the state is in the URL)
    page.go_back()
    page.wait_for_selector("#stepper-canvas[data-ready='1']")
    page.go_forward()
    page.wait_for_selector(".net:visible")

    # a linear unit: the dense view, its sum equal to the layer's output from activations.npy (PyTorch)
    unit = page.locator(".net-col[data-layer='classifier.3'] .net-unit").first
    unit.scroll_into_view_if_needed()
    index = int(unit.get_attribute("data-channel"))
    unit.click()
    page.wait_for_selector(".net-dense[data-output]")
    response = page.request.get(f"/api/models/lenet5/images/{image}/layers/classifier.3/activations.npy")
    value = float(np.load(io.BytesIO(response.body()))[index])
    assert float(page.get_attribute(".net-dense", "data-output")) == pytest.approx(value, abs=1e-5)
    assert float(page.get_attribute(".net-dense", "data-sum")) == pytest.approx(value, abs=1e-4)
    assert page.locator(".net-dense-table tbody tr").count() == 12 + 2
    page.screenshot(path=str(shots / "network-lenet5-dense-1280x720.png"), full_page=True)
    page.click(".net-back")

    # a class: the softmax table
    page.locator(".net-prob").first.click()
    page.wait_for_selector(".stepper-softmax-table")
    page.click(".net-back")
    page.wait_for_selector(".net:visible")
    # print what the first paint cost (the report quotes it)
    print(f"\nlenet5 network view: {timing['paintMs']} ms from mount to painted columns, "
          f"{timing['sincePage']:.0f} ms since navigation")


def test_what_a_channel_looks_for(page, shots: Path) -> None:
    page.goto("/")
    image = _digit(page)
    page.goto(f"/?model=lenet5&image={image}&view=network&open=unit&layer=features.3&channel=5")
    page.wait_for_selector(".chan-examples img", timeout=240_000)  # the first pass over 10,000 digits
    truth = api(page, "/api/models/lenet5/layers/features.3/channels/5/examples.json?dataset=mnist&k=9")
    shown = page.get_attribute(".chan-examples", "data-values")
    assert [float(v) for v in shown.split(",")] == [e["value"] for e in truth["examples"]]
    page.wait_for_function("() => [...document.querySelectorAll('.chan-examples img')].every(i => i.complete && i.naturalWidth > 0)")
    # feature visualisation: start, progress, the picture
    page.click(".chan-vis-controls button:has-text('Generate')")
    page.wait_for_selector(".chan-vis-image:visible", timeout=240_000)
    status = api(page, "/api/models/lenet5/layers/features.3/channels/5/feature-vis.json?seed=0")
    maps = np.load(io.BytesIO(page.request.get(f"/api/models/lenet5/images/{image}/layers/features.3/activations.npy").body()))
    # the optimised picture excites the channel (on average over positions) more than the digit does
    assert status["state"] == "done" and status["objective"] > float(maps[5].mean())
    # the top-channels panel links to each channel's own view
    page.locator(".top-channel:not(.is-current)").first.click()
    page.wait_for_function("() => new URLSearchParams(location.search).get('channel') !== '5'")
    page.wait_for_selector(".chan-title")
    page.locator(".chan").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "network-channel-1280x720.png"))


def test_resnet_is_summarised_and_grows(page, shots: Path, photos: Path) -> None:
    page.goto("/")
    image = _upload(page, (photos / "cat.jpg").read_bytes(), "cat.jpg")
    timing = _open(page, f"/?model=resnet18&image={image}&view=network")
    columns = int(timing["columns"])
    assert columns <= 24
    blocks = page.eval_on_selector_all(".net-col[data-layer^='layer']", "cs => cs.map(c => c.dataset.layer)")
    assert blocks == [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]  # residual blocks, not 40 leaves
    conv1 = ".net-col[data-layer='conv1'] .net-tile"
    assert page.locator(conv1).count() == 8
    page.click(".net-col[data-layer='conv1'] .net-more")
    page.wait_for_function(f"() => document.querySelectorAll(\"{conv1}\").length === 32")
    assert page.text_content(".net-col[data-layer='conv1'] .net-more") == "+32 more"
    # a block reads every channel of the block before it, in a window its receptive fields give
    text = _hover_tile(page, "layer2.0", 0)
    assert "channels of layer1.1" in text
    page.screenshot(path=str(shots / "network-resnet18-1280x720.png"))
    page.set_viewport_size({"width": 1024, "height": 640})
    page.wait_for_selector(".net[data-ready='1']")
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(shots / "network-resnet18-1024x640.png"))
    print(f"\nresnet18 network view: {timing['paintMs']} ms from mount to painted columns "
          f"(first forward pass included), {timing['sincePage']:.0f} ms since navigation")
    (shots / "network-paint.json").write_text(json.dumps({"resnet18": timing}))


def test_small_screen_has_no_sideways_page_scroll(page, shots: Path) -> None:
    page.set_viewport_size({"width": 1024, "height": 640})
    page.goto("/")
    image = _upload(page, _shape_png())
    _open(page, f"/?model=tinyvgg-shapes&image={image}&view=network")
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(shots / "network-tinyvgg-1024x640.png"))


def _shape_png() -> bytes:
    from models.datasets import shapes

    image, _, _ = shapes.sample(3, "test")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()

