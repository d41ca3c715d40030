"""The page in a real browser: loading, uploading, models, drawing, URL state — numbers checked against the API."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.browser.conftest import LAPTOP
from tests.browser.page_helpers import (
    TIMER_PROBE,
    api,
    assert_no_horizontal_overflow,
    assert_predictions_match_api,
    choose_model,
    open_page,
    query,
    table_layers,
    upload_photo,
    wait_for_predictions,
)

pytestmark = pytest.mark.browser


# --- tests ---------------------------------------------------------------------------------------


def test_page_loads_without_errors(page, shots: Path) -> None:
    open_page(page)
    models = api(page, "/api/models")["models"]
    state = query(page)
    assert state["model"] == page.evaluate("document.body.dataset.defaultModel")
    # every model is offered, grouped by family, with its weights state
    options = page.eval_on_selector_all(
        "#model-select optgroup option",
        "opts => opts.map(o => ({id: o.value, group: o.parentElement.label, state: o.dataset.weightsState}))",
    )
    assert [o["id"] for o in options] == [m["id"] for m in models]
    for option, model in zip(options, models):
        assert option["state"] == model["weights"]["state"]
        assert ("torchvision" in option["group"]) == (model["family"] == "torchvision")
    # the architecture table is the API's: leaf layers, in order, and the total
    model = api(page, f"/api/models/{state['model']}")
    assert table_layers(page) == [""] + [layer["name"] for layer in model["layers"] if layer["leaf"]]
    total = page.text_content("table.arch-table .total-params")
    assert total == f"{model['total_params']:,}"
    # the badge says untrained exactly when the model runs untrained
    assert page.is_visible("#untrained-badge") == (model["weights_used"] == "untrained")
    assert page.is_visible(".predictions .placeholder")
    assert_no_horizontal_overflow(page)
    page.screenshot(path=str(shots / "page-empty-1280x720.png"))


def test_upload_photo_shows_predictions_matching_api(page, photos: Path, shots: Path) -> None:
    open_page(page, "/?model=tinyvgg-shapes")
    image_id = upload_photo(page, photos / "cat.jpg")
    rows = wait_for_predictions(page)
    assert_predictions_match_api(page, rows)
    # the uploaded image and what the model sees (64×64) are shown
    page.wait_for_function(
        "() => ['image-original', 'image-model-input'].every(id => document.getElementById(id).naturalWidth > 0)"
    )
    assert page.get_attribute("#image-original", "src").endswith(image_id)
    assert page.evaluate("document.getElementById('image-model-input').naturalWidth") == 64
    page.screenshot(path=str(shots / "page-photo-1280x720.png"))


def test_bad_upload_shows_the_server_message(page, console, tmp_path: Path) -> None:
    console.allow(r"Failed to load resource: the server responded with a status of 4(15|22)")
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("this is not a picture")
    open_page(page)
    page.set_input_files("#file-input", str(not_an_image))
    page.wait_for_selector("#image-error:not([hidden])")
    message = page.text_content("#image-error")
    assert message.startswith("Could not use notes.txt: ")
    assert len(message) > len("Could not use notes.txt: ") + 10
    assert "image" not in query(page)


def test_switching_models_updates_table_and_predictions(page, photos: Path, shots: Path) -> None:
    open_page(page, "/?model=lenet5")
    upload_photo(page, photos / "zebra.jpg")
    seen_tables = []
    for model_id in ("lenet5", "tinyvgg-shapes", "resnet18"):
        if model_id != "lenet5":
            choose_model(page, model_id)
        model = api(page, f"/api/models/{model_id}")
        assert query(page)["model"] == model_id
        layers = table_layers(page)
        assert layers == [""] + [layer["name"] for layer in model["layers"] if layer["leaf"]]
        assert page.text_content("table.arch-table .total-params") == f"{model['total_params']:,}"
        seen_tables.append(layers)
        rows = wait_for_predictions(page)
        assert_predictions_match_api(page, rows)
        assert page.is_visible("#untrained-badge") == (model["weights_used"] == "untrained")
        # the drawing pad is there for 28×28 models only
        assert page.is_visible("#draw-card") == (model["input"]["height"] == 28)
    assert len({tuple(t) for t in seen_tables}) == 3
    # resnet18 offline: trained weights are downloadable, so it runs untrained and says so
    assert page.is_visible("#untrained-badge")
    assert page.is_visible("#download-button")
    assert_no_horizontal_overflow(page)
    page.screenshot(path=str(shots / "page-resnet18-untrained-1280x720.png"))


def test_drawing_classifies_as_you_draw(page, shots: Path) -> None:
    open_page(page, "/?model=lenet5")
    assert page.is_visible("#draw-card")
    page.locator("#draw-canvas").scroll_into_view_if_needed()  # below the file chooser and the samples
    canvas = page.locator("#draw-canvas").bounding_box()
    x, y, size = canvas["x"], canvas["y"], canvas["width"]
    page.mouse.move(x + 0.35 * size, y + 0.2 * size)
    page.mouse.down()
    for t in range(12):  # a "7": the bar, then the stem
        page.mouse.move(x + (0.35 + 0.3 * t / 11) * size, y + 0.2 * size)
    for t in range(12):
        page.mouse.move(x + (0.65 - 0.2 * t / 11) * size, y + (0.2 + 0.6 * t / 11) * size)
    page.mouse.up()
    # a slow machine sends the drawing mid-stroke too: wait until the last of it is sent and in the URL
    page.wait_for_function("""() => !document.getElementById('draw-canvas').dataset.pending
        && new URLSearchParams(location.search).has('image')""")
    rows = wait_for_predictions(page)
    assert_predictions_match_api(page, rows)
    # what was uploaded is the drawing: white ink on black, the canvas's size
    image_id = query(page)["image"]
    png = page.request.get(f"/api/images/{image_id}")
    assert png.ok
    picture = Image.open(io.BytesIO(png.body())).convert("L")
    assert picture.size == (280, 280)
    assert picture.getpixel((2, 2)) == 0
    assert picture.getpixel((int(0.5 * 280), int(0.2 * 280))) == 255
    page.screenshot(path=str(shots / "page-drawing-1280x720.png"))
    # Clear empties the pad and drops the image from the state
    page.click("#draw-clear")
    page.wait_for_function("() => !new URLSearchParams(location.search).has('image')")
    assert page.is_visible(".predictions .placeholder")


def test_gallery_sample_is_uploaded_and_predicted(page) -> None:
    open_page(page, "/?model=tinyvgg-shapes")
    page.click("#gallery-tabs button[data-set='shapes']")
    first = page.locator("#gallery button[data-sample]").first
    sample_id = first.get_attribute("data-sample")
    first.click()
    page.wait_for_function("() => new URLSearchParams(location.search).has('image')")
    sample_png = page.request.get(f"/api/samples/{sample_id}.png").body()
    assert query(page)["image"] == hashlib.sha256(sample_png).hexdigest()
    assert_predictions_match_api(page, wait_for_predictions(page))
    assert first.get_attribute("aria-pressed") == "true"


def test_imagenet_models_open_the_photos_tab(page, photos: Path) -> None:
    open_page(page, "/?model=squeezenet1_1")
    page.wait_for_selector("#gallery-tabs button[data-set='photos'][aria-selected='true']")
    zebra = page.locator("#gallery button[data-sample='photos-zebra']")
    zebra.click()
    page.wait_for_function("() => new URLSearchParams(location.search).has('image')")
    png = page.request.get("/api/samples/photos-zebra.png").body()
    assert query(page)["image"] == hashlib.sha256(png).hexdigest()
    assert_predictions_match_api(page, wait_for_predictions(page))


def test_a_photo_on_a_digit_model_offers_the_photo_model(page, photos: Path, shots: Path, tmp_path: Path) -> None:
    """LeNet-5 knows only grey digits: a colour photo uploaded on it is answered (the user may want to see
    what happens), with a note saying why the answer means little and a button to see it on the ImageNet
    model. A grey picture gets no such note, nor does a photo on the photo model."""
    open_page(page, "/?model=lenet5")
    upload_photo(page, photos / "pizza.jpg")
    note = page.locator(".notice[data-notice='photo']")
    note.wait_for(state="visible")
    assert "LeNet-5" in note.text_content() and "MNIST" in note.text_content()
    page.screenshot(path=str(shots / "page-photo-on-lenet5-1280x720.png"))
    note.locator(".notice-action").click()
    page.wait_for_function("() => new URLSearchParams(location.search).get('model') === 'efficientnet_lite0'")
    assert_predictions_match_api(page, wait_for_predictions(page))
    assert note.count() == 0
    # a grey picture (a scanned digit) on the digit model: nothing to suggest
    page.goto("/?model=lenet5&view=overview")
    page.wait_for_selector("table.arch-table[data-model] tbody tr")
    grey = tmp_path / "grey.png"
    Image.open(photos / "pizza.jpg").convert("L").save(grey)
    upload_photo(page, grey)
    wait_for_predictions(page)
    assert note.count() == 0


def test_url_state_round_trips_through_reload_and_history(page, photos: Path, shots: Path) -> None:
    open_page(page, "/?model=lenet5")
    image_id = upload_photo(page, photos / "dog.jpg")
    choose_model(page, "tinyvgg-shapes")
    page.check("#arch-show-blocks")
    page.wait_for_selector("table.arch-table[data-blocks='true']")
    before = query(page)
    assert before == {
        "model": "tinyvgg-shapes",
        "weights": "auto",
        "view": "overview",
        "image": image_id,
        "blocks": "1",
    }
    rows_before = wait_for_predictions(page)
    layers_before = table_layers(page)
    assert len(layers_before) > len([1 for name in layers_before if name and "." in name])  # containers shown

    page.reload()
    page.wait_for_selector("table.arch-table[data-model='tinyvgg-shapes'][data-blocks='true']")
    assert query(page) == before
    assert page.input_value("#model-select") == "tinyvgg-shapes"
    assert page.is_checked("#arch-show-blocks")
    assert table_layers(page) == layers_before
    assert wait_for_predictions(page) == rows_before
    assert page.get_attribute("#image-original", "src").endswith(image_id)

    # a shared link in a new page gives the same view
    other = page.context.new_page()
    other.goto(page.url)
    other.wait_for_selector("table.arch-table[data-model='tinyvgg-shapes'][data-blocks='true']")
    assert wait_for_predictions(other) == rows_before
    other.close()

    # back: blocks off, then the model before
    page.go_back()
    page.wait_for_selector("table.arch-table[data-model='tinyvgg-shapes'][data-blocks='false']")
    page.go_back()
    page.wait_for_selector("table.arch-table[data-model='lenet5']")
    assert page.input_value("#model-select") == "lenet5"
    assert query(page)["image"] == image_id
    assert_predictions_match_api(page, wait_for_predictions(page))
    page.go_forward()
    page.wait_for_selector("table.arch-table[data-model='tinyvgg-shapes']")
    assert page.input_value("#model-select") == "tinyvgg-shapes"


def test_weights_toggle_switches_between_trained_and_untrained(page) -> None:
    models = api(page, "/api/models")["models"]
    trained = [m for m in models if m["weights"]["state"] in ("bundled", "cached") and m["family"] == "bundled"]
    if not trained:
        pytest.skip("no bundled model has trained weights on this server")
    model_id = trained[0]["id"]
    open_page(page, f"/?model={model_id}")
    page.locator("#gallery button[data-sample]").first.click()
    page.wait_for_function("() => new URLSearchParams(location.search).has('image')")
    assert page.is_visible("#weights-toggle")
    assert not page.is_visible("#untrained-badge")
    assert page.get_attribute("#weights-toggle button[data-weights='trained']", "aria-checked") == "true"
    trained_rows = wait_for_predictions(page)
    assert_predictions_match_api(page, trained_rows)

    page.click("#weights-toggle button[data-weights='untrained']")
    page.wait_for_function("() => new URLSearchParams(location.search).get('weights') === 'untrained'")
    page.wait_for_selector("#untrained-badge:not([hidden])")
    assert page.get_attribute("#weights-toggle button[data-weights='untrained']", "aria-checked") == "true"
    untrained_rows = wait_for_predictions(page)
    assert_predictions_match_api(page, untrained_rows)
    assert untrained_rows != trained_rows

    page.click("#weights-toggle button[data-weights='trained']")
    page.wait_for_selector("#untrained-badge", state="hidden")
    assert wait_for_predictions(page) == trained_rows


def test_weights_toggle_hidden_without_trained_weights(page) -> None:
    models = api(page, "/api/models")["models"]
    without = [m for m in models if m["weights"]["state"] not in ("bundled", "cached")]
    if not without:
        pytest.skip("every model has trained weights on this server")
    open_page(page, f"/?model={without[0]['id']}")
    assert not page.is_visible("#weights-toggle")
    assert page.is_visible("#untrained-badge")
    option_text = page.text_content(f"#model-select option[value='{without[0]['id']}']")
    assert re.search(r"untrained", option_text)


def test_laptop_layout(page, shots: Path, photos: Path) -> None:
    page.set_viewport_size(LAPTOP)
    open_page(page, "/?model=lenet5")
    upload_photo(page, photos / "pizza.jpg")
    assert_predictions_match_api(page, wait_for_predictions(page))
    # two columns, inputs on the left, and nothing wider than the window
    sidebar = page.locator(".sidebar").bounding_box()
    main = page.locator("main").bounding_box()
    assert sidebar["x"] + sidebar["width"] <= main["x"]
    assert main["x"] + main["width"] <= LAPTOP["width"]
    assert_no_horizontal_overflow(page)
    page.screenshot(path=str(shots / "page-laptop-1440x900.png"))


@pytest.mark.parametrize("size", [(1024, 640), (1280, 720)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_view_tab_is_in_sight(page, size: tuple[int, int], shots: Path) -> None:
    """The tab bar scrolls sideways rather than wrap; on a 1024 px laptop that hid Sandbox and Live."""
    page.set_viewport_size({"width": size[0], "height": size[1]})
    open_page(page, "/?model=lenet5")
    page.wait_for_selector("#view-tabs [role=tab]")
    bar = page.locator("#view-tabs")
    assert bar.evaluate("el => el.scrollWidth <= el.clientWidth"), "the tab bar scrolls"
    box = bar.bounding_box()
    tabs = page.locator("#view-tabs [role=tab]")
    assert tabs.count() >= 7
    for i in range(tabs.count()):
        tab = tabs.nth(i).bounding_box()
        assert box["x"] <= tab["x"] and tab["x"] + tab["width"] <= box["x"] + box["width"], tabs.nth(i).text_content()
    page.screenshot(path=str(shots / f"page-tabs-{size[0]}x{size[1]}.png"))


DROP_OR_PASTE = """
async ([kind, url]) => {
    const blob = await (await fetch(url)).blob();
    const transfer = new DataTransfer();
    transfer.items.add(new File([blob], 'sample.png', {type: 'image/png'}));
    if (kind === 'drop') {
        const zone = document.getElementById('dropzone');
        zone.dispatchEvent(new DragEvent('dragenter', {bubbles: true, dataTransfer: transfer}));
        zone.dispatchEvent(new DragEvent('drop', {bubbles: true, cancelable: true, dataTransfer: transfer}));
    } else {
        document.body.dispatchEvent(new ClipboardEvent('paste', {bubbles: true, cancelable: true, clipboardData: transfer}));
    }
}
"""


@pytest.mark.parametrize("kind", ["drop", "paste"])
def test_drop_and_paste_upload_the_image(page, kind: str) -> None:
    open_page(page, "/?model=tinyvgg-shapes")
    sample_url = "/api/samples/shapes-test-4.png"
    expected_id = hashlib.sha256(page.request.get(sample_url).body()).hexdigest()
    page.evaluate(DROP_OR_PASTE, [kind, sample_url])
    page.wait_for_function("id => new URLSearchParams(location.search).get('image') === id", arg=expected_id)
    assert_predictions_match_api(page, wait_for_predictions(page))
    assert not page.evaluate("document.getElementById('dropzone').classList.contains('is-dragover')")


def test_failed_weights_download_says_why(page, console) -> None:
    # squeezenet1_1 has the smallest torchvision checkpoint (4.7 MB), should a test machine be online
    model_id = "squeezenet1_1"
    summary = api(page, f"/api/models/{model_id}")
    if summary["weights"]["state"] != "downloadable":
        pytest.skip(f"{model_id} weights are {summary['weights']['state']}, not downloadable")
    open_page(page, f"/?model={model_id}")
    assert page.is_visible("#untrained-badge")
    page.click("#download-button")
    page.wait_for_function(
        "() => ['failed', 'done'].includes(document.getElementById('weights-download').dataset.state)"
    )
    status = api(page, f"/api/models/{model_id}/weights/download")
    if status["state"] == "done":  # online: the weights arrived and the model now runs trained
        page.wait_for_selector("#untrained-badge", state="hidden")
        return
    notice = page.text_content("#notices .notice")
    assert status["error"] and status["error"] in notice
    assert page.text_content("#download-button") == "Retry download"
    assert page.is_visible("#untrained-badge")


def test_download_progress_is_polled_and_shown(page) -> None:
    """The server side is faked with page.route: this checks the page's polling and progress display."""
    model_id = "squeezenet1_1"
    if api(page, f"/api/models/{model_id}")["weights"]["state"] != "downloadable":
        pytest.skip(f"{model_id} weights are not downloadable here")
    mib = 1024 * 1024
    answers = [
        {"state": "running", "downloaded": 0, "total": 4 * mib, "error": None},
        {"state": "running", "downloaded": 1 * mib, "total": 4 * mib, "error": None},
        {"state": "running", "downloaded": 3 * mib, "total": 4 * mib, "error": None},
        {"state": "done", "downloaded": 4 * mib, "total": 4 * mib, "error": None},
    ]
    calls: list[str] = []

    def fake(route, request) -> None:
        calls.append(request.method)
        body = answers[min(len(calls) - 1, len(answers) - 1)]
        route.fulfill(status=202 if request.method == "POST" else 200, json=body)

    page.route(f"**/api/models/{model_id}/weights/download", fake)
    page.add_init_script(TIMER_PROBE)
    open_page(page, f"/?model={model_id}")
    page.click("#download-button")
    page.wait_for_function("() => document.getElementById('download-text').textContent === '1.0 MB of 4.0 MB'")
    assert page.is_visible("#download-progress")
    assert page.evaluate("document.getElementById('download-progress').value") == 1 * mib
    page.wait_for_function("() => document.getElementById('download-text').textContent === '3.0 MB of 4.0 MB'")
    page.wait_for_function("() => document.getElementById('weights-download').dataset.state === 'done'")
    assert calls[0] == "POST" and set(calls[1:]) == {"GET"} and len(calls) == 4
    assert page.text_content("#download-button") == "Downloaded"
    # polling stopped once done: no poll timer is left
    page.wait_for_function("() => window.__pendingTimers('weights-download.js') === 0")
    assert len(calls) == 4


def test_every_view_tab_mounts_and_unmounts_cleanly(page) -> None:
    """Each registered view mounts, and leaving it leaves nothing behind (no errors, overview intact)."""
    open_page(page, "/?model=tinyvgg-shapes")
    page.locator("#gallery button[data-sample]").first.click()
    page.wait_for_function("() => new URLSearchParams(location.search).has('image')")
    rows = wait_for_predictions(page)
    views = page.eval_on_selector_all("#view-tabs button:not(:disabled)", "bs => bs.map(b => b.dataset.view)")
    assert views[0] == "network"  # the whole network at a glance is the first view
    for view in [v for v in views if v != "overview"] + ["overview"]:
        page.click(f"#view-tabs button[data-view='{view}']")
        page.wait_for_function("v => new URLSearchParams(location.search).get('view') === v", arg=view)
        page.wait_for_selector(f"#view .view-body.view-{view}")
        assert page.get_attribute(f"#view-tabs button[data-view='{view}']", "aria-selected") == "true"
        assert page.locator("#view .view-body").count() == 1  # the previous view is gone
        page.wait_for_load_state("networkidle")
    assert wait_for_predictions(page) == rows


def test_predictions_follow_the_pen_before_it_lifts(page) -> None:
    open_page(page, "/?model=lenet5")
    page.locator("#draw-canvas").scroll_into_view_if_needed()  # below the file chooser and the samples
    canvas = page.locator("#draw-canvas").bounding_box()
    x, y, size = canvas["x"], canvas["y"], canvas["width"]
    page.mouse.move(x + 0.3 * size, y + 0.2 * size)
    page.mouse.down()
    shown_while_drawing = False
    for t in range(60):  # a slow, unbroken stroke: never a pause long enough for the debounce alone
        page.mouse.move(x + (0.3 + 0.006 * t) * size, y + (0.2 + 0.01 * t) * size)
        try:  # the pen moves on every 40 ms unless the bars have come
            page.wait_for_selector(".predictions:not([data-for='']) .bar-row", timeout=40)
        except PlaywrightTimeoutError:
            continue
        shown_while_drawing = True
        break
    page.mouse.up()
    assert shown_while_drawing, "no predictions until the pen was lifted"
    page.wait_for_selector("#draw-canvas:not([data-pending])", state="attached")  # the last drawing is sent
    assert_predictions_match_api(page, wait_for_predictions(page))
