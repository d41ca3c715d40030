"""The occlusion patch over the live camera image (issue 22 §2): Chromium's fake camera plays a video of a
real photo; "Cover part of the image" puts the probe's patch on every frame, dragging it over what the
model sees moves it (URL keys py/px, as the probe's), and each answer says which patch it was computed
with while the top-5 keeps updating. The numbers equal the probe's: tests/api/test_live_api.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.page_helpers import query
from tests.browser.test_live_page import bars, camera_browser, camera_page, frames_shown, wait_for_frames  # noqa: F401

pytestmark = pytest.mark.browser


def wait_patch(page, expected: str) -> None:
    """An answer computed with this patch ("y,x,height,width,fill", '' for none) is on screen."""
    page.wait_for_function("p => document.querySelector('.live-model-input').dataset.patch === p", arg=expected)


@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 720}, {"width": 1024, "height": 640}])
def test_the_patch_follows_the_drag_over_the_live_image(camera_page, shots: Path, viewport) -> None:  # noqa: F811
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
