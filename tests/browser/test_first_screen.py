"""The first screen works without scrolling (issue 20 §4), at 1280×720 and 1024×640: the file chooser and the
sample images are above the fold, the top-1 prediction is in view on every tab (a badge in the header whose
label and percentage are the API's), and a notice appears where the user is looking even when the page was
scrolled."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.page_helpers import api, query, upload_photo
from tests.browser.test_font_sizes import upload

pytestmark = pytest.mark.browser

SIZES = [(1280, 720), (1024, 640)]
TABS = ["network", "overview", "layers", "saliency", "step-through", "sandbox", "live"]


def inside_viewport(page, selector: str) -> dict:
    box = page.locator(selector).first.bounding_box()
    assert box, f"{selector} is not shown"
    height = page.viewport_size["height"]
    assert box["y"] >= 0 and box["y"] + box["height"] <= height, (selector, box, height)
    return box


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("model", ["lenet5", "efficientnet_lite0"])
def test_file_chooser_and_samples_above_the_fold(page, size, model, photos: Path, shots: Path) -> None:
    page.set_viewport_size({"width": size[0], "height": size[1]})
    image = upload(page, model, photos)  # with an image: its pair of pictures takes room in the same card
    page.goto(f"/?model={model}&image={image}&view=overview")
    page.wait_for_selector("#image-pair:not([hidden]) img")
    page.wait_for_selector(".gallery .sample img")
    page.screenshot(path=str(shots / f"first-screen-{model}-{size[0]}x{size[1]}.png"))
    inside_viewport(page, "label[for='file-input']")
    inside_viewport(page, ".gallery .sample")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_top_prediction_is_in_view_on_every_tab(page, size, photos: Path) -> None:
    page.set_viewport_size({"width": size[0], "height": size[1]})
    image = upload(page, "efficientnet_lite0", photos)
    truth = api(page, f"/api/models/efficientnet_lite0/images/{image}/predictions?top_k=1")["predictions"][0]
    for present in ("", "&present=1"):
        for tab in TABS:
            page.goto(f"/?model=efficientnet_lite0&image={image}&view={tab}{present}")
            page.wait_for_selector(f"#top-prediction[data-for$='|{image}']")
            box = inside_viewport(page, "#top-prediction")
            assert box["x"] >= 0 and box["x"] + box["width"] <= size[0]
            assert page.inner_text("#top-prediction .top-prediction-label") == truth["label"]
            assert page.inner_text("#top-prediction .top-prediction-value") == f"{truth['probability'] * 100:.1f}%"
            assert page.evaluate("document.querySelector('.topbar').getBoundingClientRect().height") < 70  # one line


def test_a_notice_appears_where_the_user_is_looking(page, photos: Path) -> None:
    """A photo uploaded from the scrolled sidebar on a digit model: the 'this looks like a photo' notice is in
    the viewport (it was 455–512 px above it)."""
    page.set_viewport_size({"width": 1024, "height": 640})
    page.goto("/?model=lenet5&view=layers")
    page.wait_for_selector(".gallery .sample img")
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    page.wait_for_function("() => window.scrollY > 300")
    upload_photo(page, photos / "pizza.jpg")
    notice = page.locator("[data-notice='photo']")
    notice.wait_for()
    assert page.evaluate("window.scrollY") > 300  # still scrolled
    inside_viewport(page, "[data-notice='photo']")
    assert query(page)["model"] == "lenet5"
