"""Concept demos of issue 12 in the Sandbox: pooling's tolerance to shifts drawn with the server's numbers,
channel mixing by a 1×1 convolution (page numbers equal numpy's), and the model's real 1×1 layers."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tests.browser.test_projector import upload_sample

pytestmark = pytest.mark.browser

TEXT_PROBE = """
(() => {
  const original = CanvasRenderingContext2D.prototype.fillText;
  window.__shiftTexts = [];
  CanvasRenderingContext2D.prototype.fillText = function (text, x, y, maxWidth) {
    if (this.canvas && this.canvas.id === 'sandbox-shift-canvas') window.__shiftTexts.push({ text: String(text), x, y });
    return original.apply(this, arguments);
  };
})();
"""


def number(text: str) -> float:
    text = text.replace("−", "-")
    return float(re.sub(r"^(-?)\.", r"\g<1>0.", text))


def test_pooled_grids_are_drawn_with_the_servers_numbers(page) -> None:
    page.add_init_script(TEXT_PROBE)
    page.goto("/")
    image = upload_sample(page, "shapes-test-0")
    with page.expect_response(lambda r: r.url.endswith("/api/sandbox/shift")) as shift:
        page.goto(f"/?model=tinyvgg-shapes&image={image}&view=sandbox")
    answer = shift.value.json()
    page.wait_for_function("() => document.querySelector('#sandbox-shift-canvas').dataset.grids")
    grids = {g["name"]: g for g in json.loads(page.get_attribute("#sandbox-shift-canvas", "data-grids"))}
    texts = page.evaluate("window.__shiftTexts")
    for name, values in [("pooled", answer["pooled"]), ("pooled_shifted", answer["pooled_shifted"]), ("shift_then_conv", answer["shifted_output"])]:
        g = grids[name]
        assert g["font"] > 0, f"{name} shows no numbers"
        cw, ch = g["w"] / g["cols"], g["h"] / g["rows"]
        for r, row in enumerate(values):
            for c, v in enumerate(row):
                cx, cy = g["x"] + (c + 0.5) * cw, g["y"] + (r + 0.5) * ch
                drawn = [t for t in texts if abs(t["x"] - cx) < 0.5 and abs(t["y"] - cy) < 0.5]
                assert drawn, (name, r, c)
                assert number(drawn[-1]["text"]) == pytest.approx(v, abs=0.01)
    note = page.text_content(".sandbox-result")
    assert f"{round(answer['pool_unchanged_fraction'] * 100)}% of the pooled values stay the same" in note
    # the change grid is the difference of the two pooled grids, with a legend
    assert grids["pool_change"]["rows"] == len(answer["pooled"])


def test_one_by_one_convolution_mixes_channels(page) -> None:
    page.goto("/")
    image = upload_sample(page, "shapes-test-0")
    page.goto(f"/?model=tinyvgg-shapes&image={image}&view=sandbox")
    page.wait_for_selector("#sandbox-mix-canvas[data-cell]")
    with page.expect_response(lambda r: r.url.endswith("/api/sandbox/mix")) as mixed:
        page.select_option("#sb-mix-preset", "learned")
    body = json.loads(mixed.value.request.post_data)
    x, w, b = np.array(body["channels"], float), np.array(body["weights"], float), np.array(body["bias"], float)
    expected = np.einsum("oc,chw->ohw", w, x) + b[:, None, None]
    page.wait_for_function("() => document.querySelector('#sandbox-mix-canvas').dataset.value !== undefined")
    # click output channel 1, cell (2, 3)
    canvas = page.locator("#sandbox-mix-canvas")
    box = canvas.bounding_box()
    scale = box["width"] / 960
    canvas.click(position={"x": (16 + 240 + 3.5 * 44) * scale, "y": (236 + 2.5 * 22) * scale})
    page.wait_for_function("() => document.querySelector('#sandbox-mix-canvas').dataset.cell === '1,2,3'")
    assert float(canvas.get_attribute("data-value")) == pytest.approx(expected[1, 2, 3], abs=1e-9)
    text = page.text_content(".sandbox-mix-sum")
    assert text.startswith("out₁ at (y 2, x 3) = ") and f"= {expected[1, 2, 3]:.4f}".replace("-", "−") in text


def test_real_one_by_one_layers_open_in_the_step_through(page) -> None:
    page.goto("/")
    image = upload_sample(page, "shapes-test-0")
    page.goto(f"/?model=mobilenet_v3_small&weights=untrained&image={image}&view=sandbox")
    link = page.locator(".sandbox-mix-real a").first
    link.wait_for(timeout=120_000)
    name = link.get_attribute("data-layer")
    link.click()
    page.wait_for_selector("#step-through-canvas[data-ready='1']", timeout=120_000)
    assert f"layer={name}" in page.url.replace("%2E", ".")
    assert page.locator("#step-through-layer").input_value() == name
    assert "kernel 1×1" in page.text_content(".explain-panel")


def test_flatten_linear_softmax_adds_up(page, shots) -> None:
    page.goto("/")
    image = upload_sample(page, "mnist-test-3")
    page.goto(f"/?model=lenet5&image={image}&view=step-through&layer=@softmax")
    page.wait_for_selector(".linear-table")
    softmax = page.request.get(f"/api/models/lenet5/images/{image}/softmax?top=10").json()

    def check(index: int) -> None:
        table = page.locator(f".linear-table[data-target='{index}']")
        table.wait_for()
        cells = table.locator("tbody tr td:last-child").all_text_contents()
        values = [number(t) for t in cells]
        *terms, logit = values  # products, the other inputs, the bias, then the logit
        assert sum(terms) == pytest.approx(logit, abs=2e-3)
        expected = next(c for c in softmax["classes"] if c["index"] == index)["logit"]
        assert float(table.get_attribute("data-logit")) == pytest.approx(expected, rel=1e-5, abs=1e-5)

    check(softmax["classes"][0]["index"])
    assert "16×5×5 maps are read" in page.text_content(".flatten-step") and "400 numbers" in page.text_content(".flatten-step")
    page.screenshot(path=str(shots / "flatten-linear-softmax.png"), full_page=True)
    second = softmax["classes"][1]["index"]
    page.click(f"tr.softmax-row[data-index='{second}']")
    check(second)
    assert f"cls={second}" in page.url
