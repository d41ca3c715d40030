"""The Step-through view in Chromium: the numbers it draws equal the layer's output (activations.npy),
play / pause / step / keyboard / scrub / click-to-jump work, timers stop when the view closes, and the
PNG and GIF exports are real files of the canvas."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.browser.page_helpers import TIMER_PROBE

pytestmark = pytest.mark.browser



def upload(page, data: bytes, name: str = "image.png") -> str:
    response = page.request.post("/api/images", multipart={"file": {"name": name, "mimeType": "image/png", "buffer": data}})
    assert response.ok, response.text()
    return response.json()["image_id"]


def shape_png() -> bytes:
    rng = np.random.default_rng(3)
    pixels = (rng.random((64, 64, 3)) * 60).astype(np.uint8)
    pixels[20:44, 14:40] = [230, 180, 40]
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def npy(page, url: str) -> np.ndarray:
    response = page.request.get(url)
    assert response.ok, url
    return np.load(io.BytesIO(response.body()), allow_pickle=False)


def canvas(page) -> dict:
    return page.eval_on_selector("#step-through-canvas", "c => ({...c.dataset})")


def wait_ready(page, cell: str | None = None) -> dict:
    """The canvas dataset once the frame (at `cell`, when given) is drawn with all its data."""
    try:
        page.wait_for_function(
            "cell => { const c = document.querySelector('#step-through-canvas'); return c && c.dataset.ready === '1' && (!cell || c.dataset.cell === cell); }",
            arg=cell, timeout=30_000)
    except Exception as exc:
        state = page.eval_on_selector("#step-through-canvas", "c => ({...c.dataset})") if page.locator("#step-through-canvas").count() else None
        raise AssertionError(f"not ready at {cell}: {state}") from exc
    return canvas(page)


def query(page) -> dict:
    return page.evaluate("Object.fromEntries(new URLSearchParams(location.search))")


@pytest.fixture
def image_id(page) -> str:
    page.add_init_script(TIMER_PROBE)
    page.goto("/")
    return upload(page, shape_png())


def test_rgb_conv_numbers_equal_the_layer_output(page, image_id: str, shots: Path) -> None:
    page.goto(f"/?model=tinyvgg-shapes&view=step-through&image={image_id}&layer=block1.0&channel=4&pos=30,20")
    state = wait_ready(page, "30,20")
    out = npy(page, f"/api/models/tinyvgg-shapes/images/{image_id}/layers/block1.0/activations.npy")
    after = npy(page, f"/api/models/tinyvgg-shapes/images/{image_id}/layers/block1.1/activations.npy")
    assert float(state["value"]) == pytest.approx(float(out[4, 30, 20]), rel=1e-5, abs=1e-6)
    assert float(state["final"]) == pytest.approx(float(after[4, 30, 20]), rel=1e-5, abs=1e-6)
    # R, G, B, bias, ReLU: five steps per output cell
    assert int(state["count"]) == 62 * 62 * 5
    assert state["frame"] == str((30 * 62 + 20) * 5)
    page.locator("#step-through-canvas").screenshot(path=str(shots / "step-through-rgb-conv.png"))


def test_step_keyboard_scrub_and_play(page, image_id: str) -> None:
    page.goto(f"/?model=tinyvgg-shapes&view=step-through&image={image_id}&layer=block1.0")
    start = int(wait_ready(page, "0,0")["frame"])
    page.click("[data-action='forward']")
    assert int(canvas(page)["frame"]) == start + 1 and canvas(page)["phase"] == "1"
    page.locator("#step-through-canvas").focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    assert int(canvas(page)["frame"]) == start
    page.keyboard.press("Shift+ArrowRight")  # a whole cell: 5 steps
    assert wait_ready(page, "0,1")["phase"] == "0"
    page.eval_on_selector(".player-scrub", "s => { s.value = '15'; s.dispatchEvent(new Event('input')); }")
    assert wait_ready(page, "0,3")["frame"] == "15"
    # play at 16 steps/s, then pause with the space bar
    page.select_option(".player-speed", "16")
    page.click("[data-action='play']")
    page.wait_for_function("() => Number(document.querySelector('#step-through-canvas').dataset.frame) >= 20")
    page.locator("#step-through-canvas").focus()
    page.keyboard.press(" ")
    paused = canvas(page)["frame"]
    # paused means no animation timer left: nothing can advance the frame any more
    page.wait_for_function("() => window.__pendingTimers('animator.js') === 0")
    assert canvas(page)["frame"] == paused
    # pausing writes the cell into the URL, so the link reproduces it
    assert query(page)["pos"] == canvas(page)["cell"]


def test_click_output_cell_jumps_and_hover_shows_numbers(page, image_id: str) -> None:
    page.goto(f"/?model=tinyvgg-shapes&view=step-through&image={image_id}&layer=block1.4&channel=2")
    state = wait_ready(page, "0,0")
    geom = json.loads(state["outputGeom"])
    box = page.locator("#step-through-canvas").bounding_box()
    scale = box["width"] / 1200
    target = {"x": (geom["x0"] + (7 + 0.5) * geom["cell"]) * scale, "y": (geom["y0"] + (11 + 0.5) * geom["cell"]) * scale}
    page.locator("#step-through-canvas").hover(position=target)
    tip = page.locator(".step-through-tooltip")
    assert tip.is_visible() and "click to jump" in tip.text_content()
    page.locator("#step-through-canvas").click(position=target)
    state = wait_ready(page, "11,7")
    assert query(page)["pos"] == "11,7"
    pooled = npy(page, f"/api/models/tinyvgg-shapes/images/{image_id}/layers/block1.4/activations.npy")
    assert float(state["value"]) == pytest.approx(float(pooled[2, 11, 7]), rel=1e-6)
    assert "count" in state and int(state["count"]) == 30 * 30  # pooling: one step per cell


def test_grouped_strided_layer_and_summary(page) -> None:
    page.goto("/")
    image = upload(page, shape_png())
    layer = "features.1.block.0.0"  # MobileNetV3 depthwise 3×3, stride 2
    page.goto(f"/?model=mobilenet_v3_small&view=step-through&image={image}&layer={layer}&channel=5&pos=3,4")
    state = wait_ready(page, "3,4")
    out = npy(page, f"/api/models/mobilenet_v3_small/images/{image}/layers/{layer}/activations.npy")
    assert float(state["value"]) == pytest.approx(float(out[5, 3, 4]), rel=1e-5, abs=1e-6)


def test_softmax_table_matches_predictions(page, image_id: str) -> None:
    page.goto(f"/?model=tinyvgg-shapes&view=step-through&image={image_id}&layer=@softmax")
    page.wait_for_selector(".step-through-softmax-table tbody tr")
    first = page.locator(".step-through-softmax-table tbody tr").first.locator("td")
    predictions = page.request.get(f"/api/models/tinyvgg-shapes/images/{image_id}/predictions").json()["predictions"]
    assert first.nth(0).text_content() == predictions[0]["label"]
    shown = float(first.nth(4).text_content().replace("%", "").replace("−", "-").strip())
    assert shown == pytest.approx(predictions[0]["probability"] * 100, abs=0.01)


def test_exports_are_real_files(page, image_id: str, tmp_path: Path) -> None:
    page.goto(f"/?model=tinyvgg-shapes&view=step-through&image={image_id}&layer=block1.0&pos=5,5")
    wait_ready(page, "5,5")
    with page.expect_download() as png_download:
        page.click("[data-export='png']")
    png = Image.open(png_download.value.path())
    assert png.format == "PNG" and png.size == (1200, 520)
    page.select_option(".player-speed", "8")
    with page.expect_download(timeout=120_000) as gif_download:
        page.click("[data-export='gif']")
    gif = Image.open(gif_download.value.path())
    assert gif.format == "GIF" and gif.size == (1200, 520) and gif.n_frames == 120
    first = np.asarray(gif.convert("RGB")).copy()
    gif.seek(60)
    later = np.asarray(gif.convert("RGB"))
    assert (first != later).any()  # the window moved
    assert page.text_content(".step-through-export-note").startswith("GIF saved")


def test_leaving_the_view_stops_its_timers(page, image_id: str) -> None:
    page.goto(f"/?model=tinyvgg-shapes&view=step-through&image={image_id}&layer=block1.0")
    wait_ready(page)
    page.click("[data-action='play']")
    page.wait_for_function("() => window.__pendingTimers('animator.js') > 0")
    page.click("#view-tabs button[data-view='overview']")
    page.wait_for_selector("#view .view-body.view-overview")
    page.wait_for_function("() => window.__pendingTimers('animator.js') === 0")
    assert page.locator("#step-through-canvas").count() == 0


def test_webm_export_is_a_webm_file(page, image_id: str) -> None:
    page.goto(f"/?model=lenet5&view=step-through&image={image_id}&layer=features.2&pos=12,0")
    wait_ready(page, "12,0")
    page.select_option(".player-speed", "16")
    remaining = int(canvas(page)["count"]) - int(canvas(page)["frame"])  # 14·14 cells; the export starts here
    with page.expect_download(timeout=120_000) as download:
        page.click("[data-export='webm']")
    data = Path(download.value.path()).read_bytes()
    assert data[:4] == b"\x1a\x45\xdf\xa3" and len(data) > 1000  # the EBML header of a WebM file
    assert page.text_content(".step-through-export-note") == f"WEBM saved ({min(remaining, 120)} frames)"


def test_old_stepper_view_id_still_opens_the_step_through(page, image_id: str) -> None:
    """`view=stepper` (the view's id before the rename) in a shared link or a followed classroom state opens
    the Step-through; a loaded link is rewritten to the current id."""
    page.goto(f"/?model=tinyvgg-shapes&view=stepper&image={image_id}&layer=block1.0&pos=5,5")
    wait_ready(page, "5,5")
    assert query(page)["view"] == "step-through" and query(page)["layer"] == "block1.0"
    selected = page.locator("#view-tabs button[aria-selected='true']")
    assert selected.get_attribute("data-view") == "step-through" and selected.inner_text() == "Step-through"
    # a state change that still says `stepper` (an older teacher's page) opens it too, without a reload
    page.click("#view-tabs button[data-view='overview']")
    page.wait_for_selector("#step-through-canvas", state="detached")
    page.evaluate("""(id) => {
      history.pushState(null, '', `?model=tinyvgg-shapes&view=stepper&image=${id}&layer=block1.0&pos=7,3`);
      dispatchEvent(new PopStateEvent('popstate'));
    }""", image_id)
    wait_ready(page, "7,3")
    assert page.locator("#view-tabs button[aria-selected='true']").get_attribute("data-view") == "step-through"
