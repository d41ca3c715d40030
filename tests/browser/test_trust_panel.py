"""'Which map should we trust?' in the Saliency view: run from the button, numbers against the API, the
playback's frames against the server's order and pictures, state in the URL, legible at 1024x640 and in
projector mode."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.datasets.mnist import load_mnist_test
from tests.browser.page_helpers import api, query

pytestmark = pytest.mark.browser
MODEL = "lenet5"
DONE = ".trust-card[data-state='done']"
DONE_TIMEOUT_MS = 600_000  # five methods × six randomisation steps on a CPU shared with other work

FONT_SIZES = """card => [...card.querySelectorAll('*')].filter((e) => {
    const own = [...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    const r = e.getBoundingClientRect();
    return own && r.width > 0 && r.height > 0;
  }).map((e) => ({ text: e.textContent.trim().slice(0, 40), px: parseFloat(getComputedStyle(e).fontSize) }))"""


def upload_digit(page, shared: Path) -> str:
    images, _ = load_mnist_test(shared / "mnist")
    buf = io.BytesIO()
    Image.fromarray(images[0]).save(buf, format="PNG")
    response = page.request.post("/api/images", multipart={"file": {"name": "d.png", "mimeType": "image/png",
                                                                     "buffer": buf.getvalue()}})
    assert response.status == 201, response.text()
    return response.json()["image_id"]


def picture(page, url: str) -> np.ndarray:
    response = page.request.get(url)
    assert response.ok
    return np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"))


def test_panel_runs_and_shows_the_servers_numbers(page, shared_data, shots: Path) -> None:
    image_id = upload_digit(page, shared_data)
    page.goto(f"/?model={MODEL}&image={image_id}&view=saliency")
    page.click(".trust-run")
    page.wait_for_function("() => new URLSearchParams(location.search).get('trust') === '1'")
    page.wait_for_selector(DONE, timeout=DONE_TIMEOUT_MS)
    weights = query(page).get("weights", "auto")
    base = f"/api/models/{MODEL}/images/{image_id}/saliency"
    methods = "gradcam,guided-backprop,gradient,integrated-gradients,scorecam"
    sanity = api(page, f"{base}/sanity.json?methods={methods}&weights={weights}")
    rows = page.locator(".trust-strip-row")
    assert rows.count() == 5
    for i, method in enumerate(methods.split(",")):
        row = rows.nth(i)
        assert row.get_attribute("data-method") == method
        assert row.get_attribute("data-passes") == str(sanity["checks"][method]["passes"]).lower()
        page.wait_for_function("img => img.complete && img.naturalWidth === 6 * 28 + 5 * 2",
                               arg=row.locator("img").element_handle())
    # the Spearman chart's lines are the API's scores (one line per method, 6 points each)
    assert page.locator(".trust-chart-host[data-metric='spearman'] polyline").count() == 5
    # the ranking table: every method's AUCs as deletion.json gives them, and the random order
    # a grey digit model deletes towards the mean colour by default (a blurred digit is still the digit)
    assert page.locator(".trust-select").input_value() == "mean"
    for method in methods.split(","):
        answer = api(page, f"{base}/deletion.json?method={method}&baseline=mean&weights={weights}")
        cells = page.locator(f".trust-table tr[data-method='{method}'] td")
        assert cells.nth(0).text_content().startswith(f"{answer['deletion_auc']:.3f}")
        assert cells.nth(1).text_content().startswith(f"{answer['insertion_auc']:.3f}")
    assert page.locator(".trust-table tr[data-method='random']").count() == 1
    summary = page.locator(".trust-summary").text_content()
    assert "One image is one sample" in summary and "“7”" in summary
    half = sanity["checks"]["gradcam"]["spearman_at_half"]
    assert f"{half:.2f}" in summary
    page.screenshot(path=str(shots / "trust-panel-lenet5-1280x720.png"), full_page=True)

    # pick Integrated Gradients: its curves and playback; step 10's frames are the server's pixels
    page.click(".trust-table tr[data-method='integrated-gradients'] .trust-pick")
    page.wait_for_function("() => new URLSearchParams(location.search).get('trust_method') === 'integrated-gradients'")
    page.wait_for_selector(".trust-playback[data-ready='true']")
    answer = api(page, f"{base}/deletion.json?method=integrated-gradients&baseline=mean&weights={weights}")
    page.locator(".trust-slider").fill("10")
    page.wait_for_function("() => document.querySelector('.trust-playback').dataset.step === '10'")
    frames = page.evaluate("""() => [...document.querySelectorAll('.trust-frame')].map((c) =>
        Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data))""")
    order_bytes = page.request.get(answer["urls"]["order"]).body()
    order = np.load(io.BytesIO(order_bytes)).astype(np.int64)
    source = picture(page, answer["urls"]["input"]).reshape(-1, 3)
    baseline = picture(page, answer["urls"]["baseline"]).reshape(-1, 3)
    n = round(10 * order.size / answer["steps"])
    deleted, inserted = source.copy(), baseline.copy()
    deleted[order[:n]] = baseline[order[:n]]
    inserted[order[:n]] = source[order[:n]]
    for frame, expected in zip(frames, (deleted, inserted), strict=True):
        assert np.array_equal(np.asarray(frame, dtype=np.uint8).reshape(-1, 4)[:, :3], expected)
    assert "Step 10 of 20" in page.locator(".trust-play-caption").text_content()
    page.click(".trust-playback .trust-button")  # play to the end
    page.wait_for_function("() => document.querySelector('.trust-playback').dataset.step === '20'")

    # the URL is the state: a fresh page on it (a student following the class) shows the same panel
    url = page.url
    page.goto("/")
    page.goto(url)
    page.wait_for_selector(DONE, timeout=DONE_TIMEOUT_MS)
    page.wait_for_selector(".trust-table tr.is-chosen[data-method='integrated-gradients']")


@pytest.mark.parametrize(("size", "projector", "minimum"), [((1024, 640), False, 12), ((1280, 720), True, 16),
                                                            ((1024, 640), True, 16)])
def test_panel_is_legible(page, shared_data, shots: Path, size, projector, minimum) -> None:
    page.set_viewport_size({"width": size[0], "height": size[1]})
    image_id = upload_digit(page, shared_data)
    present = "&present=1" if projector else ""
    page.goto(f"/?model={MODEL}&image={image_id}&view=saliency&trust=1{present}")
    page.wait_for_selector(DONE, timeout=DONE_TIMEOUT_MS)
    page.wait_for_selector(".trust-playback[data-ready='true']")
    card = page.locator(".trust-card")
    card.scroll_into_view_if_needed()
    sizes = card.evaluate(FONT_SIZES)
    assert len(sizes) > 40
    smallest = min(sizes, key=lambda s: s["px"])
    assert smallest["px"] >= minimum, smallest
    assert page.evaluate("document.documentElement.scrollWidth") <= size[0]
    mode = "projector" if projector else "normal"
    card.screenshot(path=str(shots / f"trust-panel-{mode}-{size[0]}x{size[1]}.png"))
