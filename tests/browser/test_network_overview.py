"""The Network view: columns as the API lists them, hover edges by receptive field, units opened in place
(step-through, dense view, softmax) with a way back, "+N more", what a channel looks for; time to first paint."""

from __future__ import annotations

import io
import json
import re
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
    # the view explains itself: what the boxes, lines, colours and blocks mean
    page.click(".net .explain-panel summary")
    panel = page.text_content(".net .explain-panel")
    assert "Boxes and lines" in panel and "Receptive field" in panel and "Every layer of the model" in panel
    page.click(".net .explain-panel summary")

    # a conv reads a 5×5 window of every channel of the layer before it: one box per shown input channel
    text = _hover_tile(page, "features.3", 0, 0.55, 0.55)
    assert "reads a 5×5 window of 6 channels of features.2" in text, text
    assert page.locator(".net-edges .net-edge-box").count() == 6
    assert page.locator(".net-edges .net-edge").count() == 6
    # and the exact value of the cell under the pointer, from the channel's .npy
    page.wait_for_function("() => / = /.test(document.querySelector('.net-readout').textContent)")
    channel, y, x = re.search(r"channel (\d+) cell \(y (\d+), x (\d+)\)", text).groups()
    maps = np.load(io.BytesIO(page.request.get(f"/api/models/lenet5/images/{image}/layers/features.3/activations.npy").body()))
    shown = float(re.search(r" = (\S+) reads", page.text_content(".net-readout")).group(1))
    assert shown == pytest.approx(float(maps[int(channel), int(y), int(x)]), rel=5e-3, abs=1e-3)  # 3 digits shown
    # the box drawn on an input tile is 5/14 of its side (a 5×5 window of a 14×14 map)
    side = page.locator(".net-col[data-layer='features.2'] .net-tile canvas").first.bounding_box()["width"]
    rect = page.locator(".net-edges .net-edge-box").first.bounding_box()
    assert rect["width"] == pytest.approx(side * 5 / 14, abs=2.5)
    page.screenshot(path=str(shots / "network-lenet5-hover-1280x720.png"))
    # an activation reads one cell of its own channel; the first conv reads the input image
    assert "reads a 1×1 window of 1 channel of features.0" in _hover_tile(page, "features.1", 2)
    assert page.locator(".net-edges .net-edge-box").count() == 1
    assert "5×5 window of 1 channel of the input image" in _hover_tile(page, "features.0", 0, 0.5, 0.5)

    # hover cost: synthetic pointer moves over every cell of a tile (each redraws the edges)
    hover_ms = page.evaluate("""() => {
      const canvas = document.querySelector(".net-col[data-layer='features.3'] .net-tile canvas");
      const r = canvas.getBoundingClientRect();
      const t0 = performance.now();
      let n = 0;
      for (let y = 0; y < 10; y += 1) for (let x = 0; x < 10; x += 1, n += 1) {
        canvas.dispatchEvent(new PointerEvent('pointermove', { bubbles: true,
          clientX: r.left + (x + 0.5) * r.width / 10, clientY: r.top + (y + 0.5) * r.height / 10 }));
      }
      return (performance.now() - t0) / n;
    }""")
    assert page.locator(".net-edges .net-edge-box").count() == 6
    print(f"\nlenet5 hover: {hover_ms:.2f} ms per pointer move that redraws the edges")

    # click a conv unit: its step-through opens in place on the hovered cell, and Back returns
    _hover_tile(page, "features.3", 1, 0.25, 0.75)
    channel = page.get_attribute(".net-col[data-layer='features.3'] .net-tile >> nth=1", "data-channel")
    page.mouse.down()  # click where the pointer is (a cell near the bottom left)
    page.mouse.up()
    page.wait_for_selector("#step-through-canvas[data-ready='1']")
    state = query(page)
    assert (state["open"], state["layer"], state["channel"]) == ("unit", "features.3", channel)
    assert page.get_attribute("#step-through-canvas", "data-cell") == state["pos"] == "7,2"
    assert page.is_hidden(".net")
    page.click(".net-back")
    page.wait_for_selector(".net[data-ready='1']:visible")
    assert "open" not in query(page)
    # the same unit in the Layers view
    page.go_back()
    page.wait_for_selector("#step-through-canvas[data-ready='1']")
    page.click(".net-to-layers")
    page.wait_for_function("() => new URLSearchParams(location.search).get('view') === 'layers'")
    assert (query(page)["layer"], query(page)["channel"]) == ("features.3", channel)
    page.go_back()
    page.go_back()
    page.wait_for_selector(".net[data-ready='1']:visible")


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
    page.wait_for_selector(".step-through-softmax-table")
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
    # the first conv reads a 7×7 window of each of the three input channels, drawn on each
    assert "reads a 7×7 window of 3 channels of the input image" in _hover_tile(page, "conv1", 0, 0.3, 0.4)
    assert page.locator(".net-edges .net-edge-box").count() == 3
    # a block reads every channel of the block before it, in a window its receptive fields give
    text = _hover_tile(page, "layer2.0", 0)
    assert "channels of layer1.1" in text
    page.screenshot(path=str(shots / "network-resnet18-1280x720.png"))
    # a whole block has no step-through: its channel's map opens, with the panels under it
    page.locator(".net-col[data-layer='layer2.0'] .net-tile").first.click()
    page.wait_for_function("() => { const i = document.querySelector('.net-map'); return i && i.complete && i.naturalWidth === 28; }")
    assert "BasicBlock" in page.text_content(".net-detail-title")
    page.click(".net-back")
    page.wait_for_selector(".net:visible")
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



JS_READ = """async ({ pairs }) => {
  const m = await import('/static/js/network/network-math.js');
  return pairs.map(({ field, prevField, h, prevH }) =>
    Array.from({ length: h }, (_, y) => m.readRange(field, prevField, 0, y, prevH)));
}"""


@pytest.mark.parametrize("model", ["lenet5", "mnist-shallow", "mnist-deep", "tinyvgg-shapes"])
def test_edges_read_exactly_the_window_of_the_real_layer(page, model: str) -> None:
    """network-math.js's rows read, from receptive fields alone, equal the layer's own window (window_math.py)."""
    from server.services.step_through import window_math as wm

    page.goto("/")
    info = api(page, f"/api/models/{model}")
    leaves = [row for row in info["layers"] if row["leaf"] and len(row["output_shape"]) == 3]
    identity = {"size": [1, 1], "jump": [1, 1], "start": [0, 0]}
    pairs, expected = [], []
    prev_field, prev_h = identity, info["input"]["height"]
    for row in leaves:
        h = row["output_shape"][1]
        if row["kind"] in ("conv", "pool") and row.get("kernel_size"):
            window = wm.window2d((prev_h, prev_h), tuple(row["kernel_size"]), stride=row["stride"],
                                 padding=tuple(row["padding"]) if isinstance(row["padding"], list) else row["padding"],
                                 dilation=row.get("dilation", 1), ceil_mode=bool(row.get("ceil_mode")))
            rows = []
            for y in range(h):
                taps = [t[2] for t in window.cells(y, 0) if not t[4]]
                rows.append([min(taps), max(taps)])
        elif row["kind"] == "padding":  # ZeroPad2d: cell y shows input row y − top; pad rows read nothing
            top = row["padding_lrtb"][2]
            rows = [[max(0, y - top), min(prev_h - 1, y - top)] for y in range(h)]
        else:
            rows = [[y, y] for y in range(h)]  # element-wise: the same cell
        pairs.append({"field": row["receptive_field"], "prevField": prev_field, "h": h, "prevH": prev_h})
        expected.append(rows)
        prev_field, prev_h = row["receptive_field"], h
    got = page.evaluate(JS_READ, {"pairs": pairs})
    assert got == expected


def test_efficientnet_lite0_overview(page, shots: Path, photos: Path) -> None:
    """The real ImageNet model: MBConv blocks as columns, the stem's step-through, photo examples."""
    page.goto("/")
    if "efficientnet_lite0" not in {m["id"] for m in api(page, "/api/models")["models"]}:
        pytest.skip("no efficientnet_lite0 on this server")
    image = _upload(page, (photos / "cat.jpg").read_bytes(), "cat.jpg")
    timing = _open(page, f"/?model=efficientnet_lite0&image={image}&view=network")
    truth = api(page, f"/api/models/efficientnet_lite0/images/{image}/network.json")
    names = [c["name"] for c in truth["columns"]]
    assert int(timing["columns"]) == len(names) <= 24
    assert sum(name.startswith("blocks.") for name in names) == 16  # the 16 MBConv blocks
    top = page.locator(".net-prob .net-prob-label").first.text_content()
    assert top == api(page, f"/api/models/efficientnet_lite0/images/{image}/predictions?top_k=1")["predictions"][0]["label"]
    assert "reads a 3×3 window of 3 channels of the input image" in _hover_tile(page, "conv_stem", 0)
    page.screenshot(path=str(shots / "network-efficientnet-1280x720.png"))
    page.set_viewport_size({"width": 1024, "height": 640})
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(shots / "network-efficientnet-1024x640.png"))
    page.set_viewport_size({"width": 1280, "height": 720})
    # the stem opens its step-through; the photos that excite that channel most come under it
    page.locator(".net-col[data-layer='conv_stem'] .net-tile").first.click()
    page.wait_for_selector("#step-through-canvas[data-ready='1']")
    page.wait_for_selector(".chan-examples img", timeout=240_000)
    assert page.locator(".chan-examples img").count() == 9
    page.locator(".chan").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "network-efficientnet-detail-1280x720.png"))
    print(f"\nefficientnet_lite0 network view: {timing['paintMs']} ms from mount to painted columns "
          f"(first forward pass included), {timing['sincePage']:.0f} ms since navigation")
