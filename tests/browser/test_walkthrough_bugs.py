"""Bugs seen in the issue 20 walkthrough (§5), one test each: live mode and the drawing pad, live mode with no
camera, cut-off channel values, example captions running together, the step-through's highlighted sum row
over the receptive field's caption, words about hidden inputs, the missing help, and the Network's class
opening with the softmax below the fold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.browser.fonts import cut_texts
from tests.browser.test_font_sizes import upload
from tests.browser.test_live_page import camera_browser, camera_page  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser


def test_a_digit_model_goes_live_on_the_pad_even_after_the_camera_was_allowed(camera_page) -> None:  # noqa: F811
    page = camera_page
    page.goto("/?model=tinyvgg-shapes&view=live")
    page.wait_for_function("() => Number(document.querySelector('.view-live')?.dataset.frames || 0) >= 1")
    assert page.eval_on_selector(".view-live", "n => n.dataset.source") == "camera"
    # the camera is allowed now (its name is listed); LeNet-5 must still start on the pad
    page.select_option("#model-select", "lenet5")
    page.wait_for_function("() => document.querySelector('.view-live').dataset.source === 'drawing'")
    assert page.input_value("#live-source") == "drawing"


def test_live_mode_without_a_camera_says_why_and_offers_a_file(page) -> None:
    # headless Chromium without a fake device: the camera never gives a picture
    page.goto("/?model=tinyvgg-shapes&view=live")
    fallback = page.locator(".live-fallback")
    fallback.wait_for(state="visible", timeout=60_000)
    assert "camera" in fallback.inner_text()
    assert fallback.locator("button:has-text('Choose a file')").is_visible()
    assert not fallback.locator("button:has-text('drawing pad')").is_visible()  # a 64×64 colour model: no pad


@pytest.mark.parametrize("present", ["", "&present=1"], ids=["normal", "projector"])
def test_layers_channel_values_are_not_cut_off(page, present) -> None:
    page.set_viewport_size({"width": 1024, "height": 640})
    image = upload(page, "lenet5", Path("."))
    page.goto(f"/?model=lenet5&image={image}&view=layers&layer=features.3&channel=11{present}")
    page.wait_for_function("() => { const i = document.querySelector('.detail-map'); return i && i.naturalWidth > 0; }")
    page.wait_for_selector(".channel-grid[data-open-ms] .tile figcaption")
    assert cut_texts(page) == []
    # every tile shows its whole value: the caption's text fits inside the tile
    overflow = page.eval_on_selector_all(
        ".tile figcaption",
        "els => els.filter((e) => e.scrollWidth > e.clientWidth + 1).map((e) => e.textContent)")
    assert overflow == []


def test_channel_example_captions_do_not_run_together(page) -> None:
    image = upload(page, "lenet5", Path("."))
    page.goto(f"/?model=lenet5&image={image}&view=network&open=unit&layer=features.3&channel=2")
    page.wait_for_selector(".chan-examples figure", timeout=240_000)  # the first pass over 10,000 digits
    boxes = page.eval_on_selector_all(
        ".chan-example",
        """figs => figs.map((f) => {
            const fig = f.getBoundingClientRect();
            const spans = [...f.querySelectorAll('figcaption span')].map((s) => s.getBoundingClientRect());
            return {fig: [fig.left, fig.right], spans: spans.map((s) => [s.left, s.right, s.top, s.bottom])};
        })""")
    assert len(boxes) >= 4
    for b in boxes:
        for left, right, _, _ in b["spans"]:
            assert b["fig"][0] - 0.5 <= left and right <= b["fig"][1] + 0.5, b  # inside its own figure
        (_, _, top0, bottom0), (_, _, top1, _) = b["spans"][:2]
        assert top1 >= bottom0 - 0.5  # the value and the image number on two lines


def test_projector_sum_row_leaves_the_receptive_field_caption_visible(page) -> None:
    page.set_viewport_size({"width": 1024, "height": 640})
    image = upload(page, "lenet5", Path("."))
    page.goto(f"/?model=lenet5&image={image}&view=step-through&layer=features.0&pos=14,9&present=1")
    page.wait_for_selector("#step-through-canvas[data-ready='1'][data-cell='14,9'][data-rf-caption]")
    page.locator("#step-through-canvas").focus()
    page.keyboard.press("ArrowRight")  # bias and total: the highlighted row is the long '= total … (PyTorch …)'
    page.wait_for_selector("#step-through-canvas[data-phase='1'][data-highlight]")
    caption = json.loads(page.get_attribute("#step-through-canvas", "data-rf-caption"))
    row = json.loads(page.get_attribute("#step-through-canvas", "data-highlight"))
    apart = row[0] + row[2] <= caption[0] or caption[0] + caption[2] <= row[0] \
        or row[1] + row[3] <= caption[1] or caption[1] + caption[3] <= row[1]
    assert apart, (row, caption)


def test_with_the_inputs_hidden_no_text_points_at_them_on_the_left(page) -> None:
    for url, selector in (("/?model=lenet5&view=network&inputs=hidden", ".net-message, .view"),
                          ("/?model=lenet5&view=step-through&inputs=hidden", ".view"),
                          ("/?model=lenet5&view=live&inputs=hidden", ".live-pad-note")):
        page.goto(url)
        page.wait_for_selector(selector)
        page.wait_for_function("() => /image|pad/i.test(document.querySelector('#view').innerText)")
        text = page.inner_text("#view")
        assert "(left)" not in text and "at the left" not in text, text
        assert "press S" in text
    page.goto("/?model=lenet5&view=network")
    page.wait_for_function("() => document.querySelector('#view').innerText.includes('(left)')")  # shown: it is there


def test_help_on_every_view_and_the_keyboard_shortcuts(page) -> None:
    for view in ("overview", "live"):
        page.goto(f"/?model=lenet5&view={view}")
        page.wait_for_selector(f"details.explain-panel[data-view='{view}'] summary:has-text('What am I looking at?')")
    page.goto("/?model=lenet5&view=overview")
    page.wait_for_selector("table.arch-table tbody tr")
    page.locator("body").press("?")
    dialog = page.locator("dialog.shortcuts-dialog[open]")
    dialog.wait_for()
    keys = dialog.locator("dt").all_inner_texts()
    assert {"P", "S", "F", "?"} <= set(keys)
    assert any("←" in k for k in keys)


@pytest.mark.parametrize("size", [(1280, 720), (1024, 640)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_network_class_opens_with_the_softmax_in_view(page, size) -> None:
    page.set_viewport_size({"width": size[0], "height": size[1]})
    image = upload(page, "lenet5", Path("."))
    page.goto(f"/?model=lenet5&image={image}&view=network")
    page.wait_for_selector(".net[data-ready='1']")
    page.locator(".net-prob").first.scroll_into_view_if_needed()
    page.locator(".net-prob").first.click()
    page.wait_for_selector(".step-through-softmax-table")
    page.wait_for_selector(".flatten-linear table")
    page.evaluate("window.scrollTo(0, 0)")
    softmax = page.locator(".step-through-softmax-table").bounding_box()
    linear = page.locator(".flatten-linear table").bounding_box()
    assert softmax["y"] < linear["y"]  # the answer first
    assert softmax["y"] < size[1]  # and it starts above the fold
