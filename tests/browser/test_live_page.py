"""The Live view in a real browser: Chromium's fake camera plays a video made by the test (a pan over a
real photo) into the page, which streams it through the model over the WebSocket; the drawing pad's
live mode for 28×28 models; Capture freezes the live state into a normal view with the same numbers; the
occluding patch dragged over the live image."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, checked_page
from tests.browser.page_helpers import api, query

pytestmark = pytest.mark.browser

SMALL_LAPTOP = {"width": 1024, "height": 640}


def write_y4m(path: Path, photo: Path, size: tuple[int, int] = (320, 240), frames: int = 12) -> None:
    """A short 4:2:0 Y4M video panning across ``photo`` (Chromium loops it as the fake camera)."""
    width, height = size
    image = Image.open(photo).convert("RGB")
    scale = (height * 1.25) / image.height
    wide = image.resize((max(width + frames * 4, round(image.width * scale)), round(image.height * scale)))
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(frames):
            left = round(i * (wide.width - width) / max(1, frames - 1))
            crop = wide.crop((left, 0, left + width, height))
            y, cb, cr = crop.convert("YCbCr").split()
            out.write(b"FRAME\n")
            out.write(np.asarray(y, dtype=np.uint8).tobytes())
            for plane in (cb, cr):
                out.write(np.asarray(plane.resize((width // 2, height // 2), Image.BILINEAR), dtype=np.uint8).tobytes())


@pytest.fixture(scope="module")
def camera_browser(browser, photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A second Chromium (same Playwright) whose fake camera plays a video of a real photo."""
    video = tmp_path_factory.mktemp("camera") / "zebra.y4m"
    write_y4m(video, photos / "zebra.jpg")
    args = [*CHROMIUM_ARGS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={video}"]
    chromium = browser.browser_type.launch(executable_path=CHROMIUM, args=args)
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture
def camera_page(camera_browser, live_server: str, console) -> Iterator[object]:
    with checked_page(camera_browser, live_server, console) as page:
        yield page


def frames_shown(page) -> int:
    return int(page.eval_on_selector(".view-live", "node => Number(node.dataset.frames || 0)"))


def wait_for_frames(page, count: int) -> None:
    page.wait_for_function(f"() => Number(document.querySelector('.view-live')?.dataset.frames || 0) >= {count}")


def bars(page) -> list[dict]:
    return page.eval_on_selector_all(
        ".live-predictions-card .bar-row",
        "rows => rows.map(r => ({index: Number(r.dataset.index), probability: Number(r.dataset.probability),"
        " label: r.querySelector('.bar-label').textContent}))",
    )


def test_camera_frames_stream_through_the_model(camera_page, shots: Path) -> None:
    page = camera_page
    page.goto("/?model=tinyvgg-shapes&view=live&live_saliency=gradcam")
    wait_for_frames(page, 3)
    first = frames_shown(page)
    wait_for_frames(page, first + 5)  # predictions keep updating as the video plays
    assert len(bars(page)) == 5
    page.wait_for_function("() => Number(document.querySelector('#live-fps').dataset.fps) > 0")
    assert re.fullmatch(r"[\d.]+ frames/s", page.inner_text("#live-fps"))
    assert re.fullmatch(r"latency \d+ ms \(p95 \d+ ms\)", page.inner_text("#live-latency"))
    # the layer's atlas and the Grad-CAM overlay are pictures sent with the answers
    page.wait_for_function("() => document.querySelector('.live-atlas').naturalWidth > 0"
                           " && document.querySelector('.live-saliency').naturalWidth > 0")
    assert page.eval_on_selector(".view-live", "n => n.dataset.source") == "camera"
    model = api(page, "/api/models/tinyvgg-shapes")
    assert page.input_value("#live-layer") == model["default_layer"]
    page.screenshot(path=str(shots / "live-camera-1280x720.png"))
    page.set_viewport_size(SMALL_LAPTOP)
    wait_for_frames(page, frames_shown(page) + 2)
    page.screenshot(path=str(shots / "live-camera-1024x640.png"))


def test_capture_freezes_the_frame_into_a_shareable_view(camera_page) -> None:
    page = camera_page
    page.goto("/?model=tinyvgg-shapes&view=live")
    wait_for_frames(page, 3)
    page.click("#live-pause")
    assert page.inner_text("#live-pause") == "Resume"
    page.wait_for_function("() => document.querySelector('.view-live').dataset.inFlight === '0'")
    shown = frames_shown(page)
    live_bars = bars(page)
    assert frames_shown(page) == shown  # paused: nothing more is sent
    page.click("#live-capture")
    page.wait_for_function("() => new URLSearchParams(location.search).get('view') === 'layers'")
    state = query(page)
    assert state["model"] == "tinyvgg-shapes" and len(state["image"]) == 64
    truth = api(page, f"/api/models/tinyvgg-shapes/images/{state['image']}/predictions")["predictions"]
    assert [b["index"] for b in live_bars] == [p["index"] for p in truth]
    for shown_bar, expected in zip(live_bars, truth):
        assert shown_bar["probability"] == pytest.approx(expected["probability"], rel=1e-5)
    assert state["layer"] == api(page, "/api/models/tinyvgg-shapes")["default_layer"]


def test_the_drawing_pad_updates_the_layer_maps_while_drawing(page, shots: Path) -> None:
    page.goto("/?model=lenet5&view=live&layer=features.1")
    page.wait_for_selector("#draw-card:not([hidden])")
    assert page.input_value("#live-source") == "drawing"
    page.wait_for_selector(".view-live[data-socket='open']")
    page.locator("#draw-canvas").scroll_into_view_if_needed()  # below the file chooser and the samples
    box = page.locator("#draw-canvas").bounding_box()
    atlas_urls = set()
    page.mouse.move(box["x"] + 140, box["y"] + 40)
    page.mouse.down()
    for step in range(1, 9):
        page.mouse.move(box["x"] + 140, box["y"] + 40 + step * 25, steps=3)
        wait_for_frames(page, 1)
        atlas_urls.add(page.eval_on_selector(".live-atlas", "img => img.dataset.url || ''"))
    page.mouse.up()
    wait_for_frames(page, 3)
    page.wait_for_function("() => document.querySelector('.live-model-input').naturalWidth === 28")
    page.wait_for_function("() => document.querySelector('.live-atlas').naturalWidth > 0")
    atlas_urls.add(page.eval_on_selector(".live-atlas", "img => img.dataset.url || ''"))
    assert len(atlas_urls - {""}) >= 2, "the feature maps did not change while drawing"
    assert page.eval_on_selector(".view-live", "n => n.dataset.source") == "drawing"
    assert "features.1" in page.inner_text(".live-atlas-caption")
    page.screenshot(path=str(shots / "live-drawing-1280x720.png"))
    page.set_viewport_size(SMALL_LAPTOP)
    page.screenshot(path=str(shots / "live-drawing-1024x640.png"))


def test_js_meter_url_and_frame_size(page) -> None:
    page.goto("/")  # the modules are imported on their own; the page only gives them an origin
    got = page.evaluate("""async () => {
      const meter = await import('/static/js/live/live-meter.js');
      const socket = await import('/static/js/live/live-socket.js');
      const camera = await import('/static/js/live/camera-source.js');
      const m = meter.createMeter({ windowMs: 1000, samples: 4 });
      // 11 answers 100 ms apart, each 40 ms after its frame was sent, the last two 250 ms
      for (let i = 0; i <= 10; i += 1) m.answer(1000 + i * 100, 1000 + i * 100 - (i >= 9 ? 250 : 40), 20, i === 5 ? 3 : 0);
      const steady = m.read(2000);
      const later = m.read(5000);
      return {
        steady, later,
        q: [meter.quantile([5, 1, 4, 2, 3], 0.5), meter.quantile([], 0.5)],
        text: meter.formatReadout({ fps: 9.87, p50: 41.6, p95: 250 }),
        url: socket.liveUrl({ protocol: 'https:', host: 'example.org:8443' }, 'tf/efficientnet lite0',
                            { weights: 'trained', layer: 'blocks.6.0', method: '' }),
        sizes: [camera.frameSize(1920, 1080), camera.frameSize(320, 240), camera.frameSize(480, 1280)],
      };
    }""")
    # the last second holds answers at 1000..2000 ms → 10 intervals over 1 s
    assert got["steady"]["fps"] == pytest.approx(10.0, rel=1e-6)
    assert got["steady"]["answered"] == 11 and got["steady"]["dropped"] == 3
    # latency over the last 4 samples (40, 40, 250, 250): p50 rounds to an element, p95 the largest
    assert got["steady"]["p50"] in (40, 250) and got["steady"]["p95"] == 250
    assert got["later"]["fps"] == 0  # nothing for 3 s: the rate falls to zero
    assert got["q"][0] == 3 and math.isnan(got["q"][1])
    assert got["text"] == {"rate": "9.9 frames/s", "latency": "latency 42 ms (p95 250 ms)"}
    assert got["url"] == "wss://example.org:8443/api/models/tf%2Fefficientnet%20lite0/live?weights=trained&layer=blocks.6.0"
    assert got["sizes"] == [{"width": 640, "height": 360}, {"width": 320, "height": 240}, {"width": 240, "height": 640}]


# The occlusion patch over the live camera image (issue 22 §2): "Cover part of the image" puts the probe's
# patch on every frame, dragging it over what the model sees moves it (URL keys py/px, as the probe's), and
# each answer says which patch it was computed with while the top-5 keeps updating. The numbers equal the
# probe's: tests/api/test_live_api.py.

def wait_patch(page, expected: str) -> None:
    """An answer computed with this patch ("y,x,height,width,fill", '' for none) is on screen."""
    page.wait_for_function("p => document.querySelector('.live-model-input').dataset.patch === p", arg=expected)


@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 720}, {"width": 1024, "height": 640}])
def test_the_patch_follows_the_drag_over_the_live_image(camera_page, shots: Path, viewport) -> None:
    page = camera_page
    page.set_viewport_size(viewport)
    page.goto("/?model=tinyvgg-shapes&view=live&size=16")
    wait_for_frames(page, 2)
    page.click(".live-cover-toggle")
    page.wait_for_function("() => new URLSearchParams(location.search).get('live_cover') === '1'")
    wait_patch(page, "24,24,16,16,grey")  # 64×64 input: the patch starts in the middle
    box = page.locator(".live-model-input").bounding_box()
    scale = box["width"] / 64
    page.mouse.move(box["x"] + 20 * scale, box["y"] + 20 * scale)
    page.mouse.down()
    for step in range(1, 6):
        page.mouse.move(box["x"] + (20 + 6 * step) * scale, box["y"] + (20 + 4 * step) * scale)
    page.mouse.up()
    y, x = int(query(page)["py"]), int(query(page)["px"])
    assert (y, x) != (24, 24)
    wait_patch(page, f"{y},{x},16,16,grey")
    shown = frames_shown(page)
    wait_for_frames(page, shown + 2)  # the top-5 keeps updating with the patch on
    assert len(bars(page)) == 5
    page.select_option(".live-cover-fill", "noise")
    wait_patch(page, f"{y},{x},16,16,noise")
    # past the edge: clipped as the probe clips
    page.mouse.move(box["x"] + 2 * scale, box["y"] + 2 * scale)
    page.mouse.down()
    page.mouse.up()
    wait_patch(page, f"0,0,{16 + int(query(page)['py'])},{16 + int(query(page)['px'])},noise")
    name = f"live-cover-{viewport['width']}.png"
    page.screenshot(path=str(shots / name))
    page.click(".live-cover-toggle")
    page.wait_for_function("() => new URLSearchParams(location.search).get('live_cover') === null")
    wait_patch(page, "")
