"""'What does this channel look for?' from the Layers and Step-through views: the link opens the Network view's
unit detail for the same layer and channel, whose panel shows that channel's dataset examples (checked
against the examples API) — and the link is absent where it would lead nowhere new (inside that detail)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.page_helpers import api, query

pytestmark = pytest.mark.browser

LAYER, CHANNEL = "features.3", 5


def digit(page) -> str:
    png = page.request.get("/api/samples/mnist-test-0.png")
    if not png.ok:
        pytest.skip("no MNIST test images")
    response = page.request.post("/api/images", multipart={"file": {"name": "d.png", "mimeType": "image/png", "buffer": png.body()}})
    assert response.ok, response.text()
    return response.json()["image_id"]


def follow_and_check(page) -> None:
    link = page.locator("a.look-for-link:visible")
    assert link.get_attribute("data-layer") == LAYER and link.get_attribute("data-channel") == str(CHANNEL)
    href = link.get_attribute("href")
    link.click()
    page.wait_for_function("() => new URLSearchParams(location.search).get('open') === 'unit'")
    state = query(page)
    assert (state["view"], state["layer"], state["channel"]) == ("network", LAYER, str(CHANNEL))
    assert page.url.endswith(href)  # the link's own address is the state it opens
    page.wait_for_selector(f".chan-title:has-text('{CHANNEL} of {LAYER} looks for')")
    page.wait_for_selector(".chan-examples img", timeout=240_000)  # the first pass over 10,000 digits
    truth = api(page, f"/api/models/lenet5/layers/{LAYER}/channels/{CHANNEL}/examples.json?dataset=mnist&k=9")
    shown = page.get_attribute(".chan-examples", "data-values")
    assert [float(v) for v in shown.split(",")] == [e["value"] for e in truth["examples"]]
    # inside the unit detail (which embeds the step-through) there is no link back to itself
    assert page.locator("a.look-for-link:visible").count() == 0


def test_layers_channel_detail_links_to_what_it_looks_for(page, shots: Path) -> None:
    page.goto("/")
    image = digit(page)
    page.goto(f"/?model=lenet5&image={image}&view=layers&layer={LAYER}&channel={CHANNEL}")
    page.wait_for_selector(f".channel-detail [data-channel='{CHANNEL}']")
    page.wait_for_selector(f"a.look-for-link[data-channel='{CHANNEL}']:visible")
    page.screenshot(path=str(shots / "layers-look-for-link-1280x720.png"))
    follow_and_check(page)


def test_step_through_links_to_what_it_looks_for(page, shots: Path) -> None:
    page.goto("/")
    image = digit(page)
    page.goto(f"/?model=lenet5&image={image}&view=step-through&layer={LAYER}&channel={CHANNEL}")
    page.wait_for_selector("#step-through-canvas[data-ready='1']")
    page.wait_for_selector(f"a.look-for-link[data-channel='{CHANNEL}']:visible")
    page.screenshot(path=str(shots / "step-through-look-for-link-1280x720.png"))
    follow_and_check(page)
