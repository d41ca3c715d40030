"""Projector mode and the step-through's legibility, measured in Chromium at 1280×720 and 1024×640.

Every text the step-through canvas draws is recorded by wrapping ``CanvasRenderingContext2D.fillText``
(independent of the app's code), so the tests read the real font sizes, scale them by the canvas's
on-screen size to CSS px, and check that grid numbers fit their cells without being squeezed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

TEXT_PROBE = """
(() => {
  const original = CanvasRenderingContext2D.prototype.fillText;
  window.__texts = [];
  CanvasRenderingContext2D.prototype.fillText = function (text, x, y, maxWidth) {
    if (this.canvas && this.canvas.id === 'step-through-canvas') {
      const m = /(\\d+(?:\\.\\d+)?)px/.exec(this.font);
      window.__texts.push({ text: String(text), x, y, px: m ? Number(m[1]) : 0, width: this.measureText(String(text)).width,
        align: this.textAlign, maxWidth: maxWidth === undefined ? null : maxWidth });
    }
    return original.apply(this, arguments);
  };
})();
"""

NUMBER = re.compile(r"^[−-]?(\d+(\.\d*)?|\.\d+)(e[−+-]?\d+)?$")
SIZES = [(1280, 720), (1024, 640)]
CASES = [
    # LeNet-5's first conv: 5×5 kernel, one input channel, negative inputs (the "−0.17−0.01" overflow)
    ("lenet5", "mnist-test-3", "features.0", "14,9"),
    # TinyVGG's second conv: 3×3 kernel over 10 channels, a long per-channel ledger
    ("tinyvgg-shapes", "shapes-test-0", "block1.2", "20,22"),
]


def upload_sample(page, sample: str) -> str:
    png = page.request.get(f"/api/samples/{sample}.png")
    assert png.ok
    response = page.request.post("/api/images", multipart={"file": {"name": "s.png", "mimeType": "image/png", "buffer": png.body()}})
    assert response.ok, response.text()
    return response.json()["image_id"]


def frame_texts(page, url: str, cell: str) -> tuple[dict, list[dict], dict]:
    """Open `url`, wait for the frame at `cell`, then redraw it once and return (canvas dataset, texts, box)."""
    page.goto(url)
    page.wait_for_function(
        "cell => { const c = document.querySelector('#step-through-canvas'); return c && c.dataset.ready === '1' && c.dataset.cell === cell && c.dataset.fitWidth; }",
        arg=cell)
    # redraw the settled frame with the probe emptied: step forward and back
    page.evaluate("window.__texts = []")
    page.locator("#step-through-canvas").focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("cell => document.querySelector('#step-through-canvas').dataset.cell === cell && window.__texts.length > 0", arg=cell)
    page.evaluate("window.__texts = []")
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => window.__texts.some((t) => t.text.startsWith('Σ products') || t.text.includes('pooling'))")
    data = page.eval_on_selector("#step-through-canvas", "c => ({...c.dataset, width: c.width, height: c.height})")
    box = page.eval_on_selector("#step-through-canvas", "c => { const r = c.getBoundingClientRect(); return {top: r.top, bottom: r.bottom, left: r.left, right: r.right, width: r.width}; }")
    return data, page.evaluate("window.__texts"), box


def assert_no_sideways_scroll(page) -> None:
    width = page.evaluate("window.innerWidth")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    # and nothing visible pokes out on the right (a clipped overflow would hide, not fix, it)
    wide = page.evaluate(
        """w => [...document.querySelectorAll('#view *, .topbar *')].filter((e) => {
             const r = e.getBoundingClientRect(); const s = getComputedStyle(e);
             return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && r.right > w + 1;
           }).map((e) => e.className || e.tagName)""",
        width)
    assert wide == []


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_projector_step_through_is_readable(page, size, case, shots: Path) -> None:
    model, sample, layer, cell = case
    page.set_viewport_size({"width": size[0], "height": size[1]})
    page.add_init_script(TEXT_PROBE)
    page.goto("/")
    image = upload_sample(page, sample)
    data, texts, box = frame_texts(page, f"/?model={model}&image={image}&view=step-through&layer={layer}&pos={cell}&present=1", cell)
    page.screenshot(path=str(shots / f"projector-step-through-{model}-{size[0]}x{size[1]}.png"))
    assert page.evaluate("document.documentElement.classList.contains('is-projector')")
    assert not page.locator("#sidebar").is_visible()
    scale = box["width"] / data["width"]
    numbers = [t for t in texts if NUMBER.match(t["text"].strip())]
    assert len(numbers) >= 20, texts  # the grids, legends and sums are drawn
    smallest = min(t["px"] * scale for t in numbers)
    assert smallest >= 16, f"a number is {smallest:.1f} CSS px tall"
    # the whole picture is above the fold, and the page never scrolls sideways
    assert box["top"] >= 0 and box["bottom"] <= size[1]
    assert_no_sideways_scroll(page)
    # every number in a grid fits its cell at its own width (not squeezed by fillText's maxWidth)
    grids = json.loads(data["grids"])
    assert grids and all(g["font"] > 0 for g in grids), grids  # every grid shows its numbers
    inside = set()  # (x, y) of the numbers drawn in grid cells; a late redraw (a picture arriving) repeats them
    for t in numbers:
        for g in grids:
            if g["x"] <= t["x"] <= g["x"] + g["w"] and g["y"] <= t["y"] <= g["y"] + g["h"]:
                cw = g["w"] / g["cols"]
                col = int((t["x"] - g["x"]) // cw)
                left, right = g["x"] + col * cw, g["x"] + (col + 1) * cw
                assert t["width"] <= cw - 2, (t, cw)
                assert left <= t["x"] - t["width"] / 2 and t["x"] + t["width"] / 2 <= right, (t, left, right)
                inside.add((round(t["x"], 1), round(t["y"], 1)))
    assert len(inside) == sum(g["rows"] * g["cols"] for g in grids)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_normal_mode_step_through_fits_and_is_legible(page, size, shots: Path) -> None:
    """The bugs outside projector mode: ~7 px numbers, the animation cut below the fold at 720 px,
    sideways scrolling at 1024×640 because of the 'cell 1/3844' read-out."""
    page.set_viewport_size({"width": size[0], "height": size[1]})
    page.add_init_script(TEXT_PROBE)
    page.goto("/")
    image = upload_sample(page, "shapes-test-0")
    data, texts, box = frame_texts(page, f"/?model=tinyvgg-shapes&image={image}&view=step-through&layer=block1.0&pos=3,4", "3,4")
    page.screenshot(path=str(shots / f"normal-step-through-{size[0]}x{size[1]}.png"))
    scale = box["width"] / data["width"]
    numbers = [t for t in texts if NUMBER.match(t["text"].strip())]
    if size[0] >= 1280:  # beside the sidebar at 1024 px the picture is small by design: projector mode is for that
        assert min(t["px"] * scale for t in numbers) >= 12
        assert box["bottom"] <= size[1]
    assert page.evaluate("document.querySelector('.topbar').getBoundingClientRect().height") < 70  # one line
    assert_no_sideways_scroll(page)
    readout = page.locator(".player-readout")
    assert "cell 191/3844" in readout.text_content()  # 3·62 + 4 + 1
    r = readout.bounding_box()
    assert r["x"] + r["width"] <= size[0]


def test_shortcuts_toggle_projector_and_sidebar(page) -> None:
    page.goto("/?model=lenet5&view=layers")
    page.wait_for_selector("#projector-toggle")
    assert page.locator("#sidebar").is_visible()
    page.locator("body").press("s")
    page.wait_for_function("() => !document.querySelector('#sidebar').checkVisibility()")
    assert "inputs=hidden" in page.url
    assert page.get_attribute("#sidebar-toggle", "aria-pressed") == "true"
    page.locator("body").press("s")
    page.wait_for_function("() => document.querySelector('#sidebar').checkVisibility()")
    page.locator("body").press("p")
    page.wait_for_function("() => document.documentElement.classList.contains('is-projector')")
    assert "present=1" in page.url and not page.locator("#sidebar").is_visible()
    assert page.evaluate("parseFloat(getComputedStyle(document.documentElement).fontSize)") >= 20
    # the shortcut is not taken from someone typing in a field
    page.click("#model-select")
    page.keyboard.press("Escape")
    page.click("#projector-toggle")
    page.wait_for_function("() => !document.documentElement.classList.contains('is-projector')")
    assert "present" not in page.url
    assert page.locator("#sidebar").is_visible()


def test_channel_ledger_never_scrolls_silently(page) -> None:
    """The per-channel sums start at the first channel, and when they do not all fit, a line says how many
    are above (with the sum so far) or below — the list never starts mid-way without saying so."""
    page.set_viewport_size({"width": 1024, "height": 640})
    page.add_init_script(TEXT_PROBE)
    page.goto("/")
    image = upload_sample(page, "shapes-test-0")
    # TinyVGG block1.2 reads 10 channels: top 8 + 'others' + bias + total + ReLU = 12 lines, room for fewer
    page.goto(f"/?model=tinyvgg-shapes&image={image}&view=step-through&layer=block1.2&pos=20,22&present=1")
    page.wait_for_selector("#step-through-canvas[data-ready='1'][data-cell='20,22'][data-ledger]")
    first = json.loads(page.get_attribute("#step-through-canvas", "data-ledger"))
    assert first["first"] == 0 and first["above"] == 0 and first["below"] > 0  # phase 1: from the top
    assert first["shown"] + first["below"] == first["total"]
    page.locator("#step-through-canvas").focus()
    for _ in range(7):  # step to the 8th channel's phase
        page.keyboard.press("ArrowRight")
    page.wait_for_function("() => JSON.parse(document.querySelector('#step-through-canvas').dataset.ledger).above > 0")
    page.evaluate("window.__texts = []")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("() => window.__texts.some((t) => t.text.startsWith('▲'))")
    later = json.loads(page.get_attribute("#step-through-canvas", "data-ledger"))
    assert later["above"] == later["first"] > 0
    assert later["above"] + later["shown"] + later["below"] == later["total"]
    notes = [t["text"] for t in page.evaluate("window.__texts") if t["text"].startswith(("▲", "▼"))]
    assert any(re.match(rf"▲ {later['above']} lines? above · Σ so far [−\d.]+", n) for n in notes), notes


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_projector_sandbox_scene_is_enlarged_and_above_the_fold(page, size, shots: Path) -> None:
    """The sandbox's own 960×520 scene fits like the step-through's: larger than drawn in projector mode
    (the room beside the hidden sidebar), its whole picture above the fold, no sideways scroll."""
    page.set_viewport_size({"width": size[0], "height": size[1]})
    page.goto("/?view=sandbox&present=1")
    page.wait_for_function("() => { const c = document.querySelector('#sandbox-canvas'); return c && c.dataset.outputShape && c.dataset.fitWidth; }")
    page.wait_for_function("() => document.documentElement.classList.contains('is-projector')")
    box = page.eval_on_selector("#sandbox-canvas", "c => { const r = c.getBoundingClientRect(); return {top: r.top, bottom: r.bottom, width: r.width, drawn: c.width}; }")
    page.screenshot(path=str(shots / f"projector-sandbox-{size[0]}x{size[1]}.png"))
    assert box["top"] >= 0 and box["bottom"] <= size[1], box
    # enlarged: as large as the view allows (its width or the screen's height is the limit), beyond its old 720 px
    room = page.eval_on_selector("#sandbox-canvas", "c => c.parentElement.clientWidth")
    assert box["width"] >= room - 1 or box["bottom"] >= size[1] - 16, (box, room)
    assert box["width"] > 800, box
    assert_no_sideways_scroll(page)
