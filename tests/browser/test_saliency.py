"""The Saliency view in a real browser: top-5 overlays from one request, class selection and search,
method and layer switching, opacity and colours in the URL, hover values against the API's .npy."""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from models.datasets import shapes

pytestmark = pytest.mark.browser
MODEL = "tinyvgg-shapes"


def query(page) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}


def upload_shape(page, index: int = 11) -> str:
    picture, _, _ = shapes.sample(index, "test")
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    response = page.request.post(
        "/api/images", multipart={"file": {"name": "shape.png", "mimeType": "image/png", "buffer": buf.getvalue()}}
    )
    assert response.status == 201, response.text()
    return response.json()["image_id"]


def wait_for_maps(page) -> None:
    page.wait_for_selector(".sal-top:not(.is-loading) .sal-card")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.sal-heat')].every((img) => img.complete && img.naturalWidth > 0)"
    )


def test_top_five_overlays_focus_and_hover(page, shots: Path) -> None:
    page.goto("/")
    image_id = upload_shape(page)
    page.goto(f"/?model={MODEL}&image={image_id}&view=saliency")
    wait_for_maps(page)
    weights = query(page).get("weights", "auto")
    predictions = page.request.get(f"/api/models/{MODEL}/images/{image_id}/predictions?weights={weights}").json()
    cards = page.locator(".sal-card")
    assert cards.count() == 5
    indices = [int(cards.nth(i).get_attribute("data-index")) for i in range(5)]
    assert indices == [p["index"] for p in predictions["predictions"]]
    # every heat image is the server's PNG of that class's map
    for i in range(5):
        src = cards.nth(i).locator(".sal-heat").get_attribute("src")
        assert f"target={indices[i]}" in src and "method=gradcam" in src and "saliency.png" in src
    # the top-1 class is open; the note on untrained weights follows the weights in use
    assert page.locator(".sal-focus-stack").get_attribute("data-target") == str(indices[0])
    used = page.evaluate("() => document.querySelector('#untrained-badge').hidden") is False
    assert page.locator(".sal-untrained").is_visible() == used
    page.screenshot(path=str(shots / "saliency-top5.png"))

    # open the third class: the URL holds it and the focus panel shows it
    cards.nth(2).click()
    assert query(page)["target"] == str(indices[2])
    page.wait_for_selector(f".sal-focus-stack[data-target='{indices[2]}']")
    label = shapes.CLASSES[indices[2]]
    assert label in page.locator(".sal-focus-title").inner_text()
    assert cards.nth(2).get_attribute("aria-pressed") == "true"

    # the value under the pointer is the API's value at that pixel
    url = f"/api/models/{MODEL}/images/{image_id}/saliency.npy?method=gradcam&layer=block2.3&target={indices[2]}&weights={weights}"
    values = np.load(io.BytesIO(page.request.get(url).body()), allow_pickle=False)
    legend = page.locator(".sal-legend")
    low, high = float(legend.get_attribute("data-low")), float(legend.get_attribute("data-high"))
    page.wait_for_selector(f".sal-focus-stack[data-target='{indices[2]}'][data-values='ready']")
    page.locator(".sal-focus-stack").scroll_into_view_if_needed()
    box = page.locator(".sal-focus-stack").bounding_box()
    for fx, fy in ((0.25, 0.75), (0.6, 0.4)):
        x, y = box["width"] * fx, box["height"] * fy
        page.mouse.move(box["x"] + x, box["y"] + y)
        row, col = int(y / box["height"] * 64), int(x / box["width"] * 64)
        text = page.locator(".sal-readout").inner_text()
        assert text.startswith(f"({row}, {col}):"), text
        shown = float(text.split(":")[1].split("of the scale")[0])
        assert shown == pytest.approx(float(values[row, col]), rel=5e-3, abs=1e-3)
        raw_shown = float(text.rsplit(" ", 1)[1])
        assert raw_shown == pytest.approx(low + float(values[row, col]) * (high - low), rel=5e-3, abs=1e-9)


def test_search_method_layer_opacity_and_colours_live_in_the_url(page, shots: Path) -> None:
    page.goto("/")
    image_id = upload_shape(page, 23)
    page.goto(f"/?model={MODEL}&image={image_id}&view=saliency")
    wait_for_maps(page)

    # search over all labels: pick a class that may not be in the top 5
    page.fill("#sal-search", "grating 9")
    option = page.locator("#sal-search-results button").first
    assert "grating 90°" in option.inner_text()
    option.click()
    target = str(shapes.CLASSES.index("grating 90°"))
    assert query(page)["target"] == target
    page.wait_for_selector(f".sal-focus-stack[data-target='{target}']")
    assert "grating 90°" in page.locator(".sal-focus-title").inner_text()

    # opacity: a style change on the stacked images, kept in the URL
    page.locator("#sal-opacity").fill("30")
    assert query(page)["opacity"] == "0.30"
    assert page.locator(".sal-card .sal-heat").first.evaluate("(img) => img.style.opacity") == "0.3"

    # colours: new PNGs with the chosen map
    page.select_option("#sal-cmap", "magma")
    assert query(page)["cmap"] == "magma"
    page.wait_for_function("() => document.querySelector('.sal-card .sal-heat').src.includes('colormap=magma')")

    # another layer, then another method (layer-free methods disable the layer picker)
    page.select_option("#sal-layer", "block1.3")
    assert query(page)["cam_layer"] == "block1.3"
    wait_for_maps(page)
    assert "layer=block1.3" in page.locator(".sal-card .sal-heat").first.get_attribute("src")
    page.select_option("#sal-method", "layercam")
    wait_for_maps(page)
    assert "method=layercam" in page.locator(".sal-card .sal-heat").first.get_attribute("src")
    assert page.locator("#sal-layer").is_enabled()
    page.select_option("#sal-method", "guided-backprop")
    wait_for_maps(page)
    assert page.locator("#sal-layer").is_disabled()
    assert "layer=" not in page.locator(".sal-card .sal-heat").first.get_attribute("src")
    page.screenshot(path=str(shots / "saliency-guided-backprop.png"))

    # a reload reproduces the whole state from the URL
    state = query(page)
    page.reload()
    wait_for_maps(page)
    assert query(page) == state
    assert page.locator("#sal-method").input_value() == "guided-backprop"
    assert page.locator("#sal-cmap").input_value() == "magma"
    assert page.locator("#sal-opacity").input_value() == "30"
    page.wait_for_selector(f".sal-focus-stack[data-target='{target}']")


def test_leaving_and_returning_to_the_view(page) -> None:
    page.goto("/")
    image_id = upload_shape(page, 5)
    page.goto(f"/?model={MODEL}&image={image_id}&view=saliency&method=scorecam")
    wait_for_maps(page)
    page.locator("[role=tab]", has_text="Overview").click()
    page.wait_for_selector(".card-predictions")
    assert page.locator(".sal-top").count() == 0
    page.go_back()
    wait_for_maps(page)
    assert page.locator(".sal-card").count() == 5


def test_border_warning_offers_the_deeper_layer(page, photos: Path, shots: Path) -> None:
    """The tabby at blocks.5 (the former default) peaks on the 7×7 grid's border: the view says so in words
    and one click shows the map at the model's default layer, where the warning is gone (issue 20 §1)."""
    image_id = page.request.post("/api/images", multipart={"file": {
        "name": "cat.jpg", "mimeType": "image/jpeg", "buffer": (photos / "cat.jpg").read_bytes()}}).json()["image_id"]
    page.goto(f"/?model=efficientnet_lite0&image={image_id}&view=saliency&cam_layer=blocks.5")
    warning = page.locator(".sal-border-warning")
    warning.wait_for(state="visible", timeout=120_000)
    text = warning.locator(".sal-border-text").inner_text()
    assert "border of blocks.5's 7×7 grid" in text and "tabby" in text and "zero padding" in text
    button = warning.locator(".sal-border-deeper")
    assert button.inner_text() == "Show it at conv_head"
    page.screenshot(path=str(shots / "saliency-border-warning.png"))
    button.click()
    page.wait_for_function("() => new URLSearchParams(location.search).get('cam_layer') === 'conv_head'")
    page.wait_for_function("() => document.querySelector('#sal-layer').value === 'conv_head'")
    wait_for_maps(page)
    page.wait_for_selector(".sal-focus-stack[data-values='ready']")
    assert warning.is_hidden()
    for width, height in ((1280, 720), (1024, 640)):  # the warning is in view without scrolling
        page.set_viewport_size({"width": width, "height": height})
        page.goto(f"/?model=efficientnet_lite0&image={image_id}&view=saliency&cam_layer=blocks.5")
        warning.wait_for(state="visible", timeout=120_000)
        box = warning.bounding_box()
        assert box is not None and box["y"] + box["height"] <= height, (width, box)
        page.screenshot(path=str(shots / f"saliency-border-warning-{width}.png"))
        assert font_px(page, ".sal-border-text") >= 12 and font_px(page, ".sal-border-deeper") >= 12
        page.goto(f"/?model=efficientnet_lite0&image={image_id}&view=saliency&cam_layer=blocks.5&present=1")
        page.wait_for_function("() => document.documentElement.classList.contains('is-projector')")
        warning.wait_for(state="visible", timeout=120_000)
        page.screenshot(path=str(shots / f"saliency-border-warning-{width}-projector.png"))
        assert font_px(page, ".sal-border-text") >= 16 and font_px(page, ".sal-border-deeper") >= 16


def font_px(page, selector: str) -> float:
    return float(page.eval_on_selector(selector, "e => parseFloat(getComputedStyle(e).fontSize)"))
