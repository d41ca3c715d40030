"""'What does this channel look for?' on the photo model (issue 20 §6): without an image folder the panel
says plainly that the examples come from the 9 offline photos and how to give more; with one
(``CONVSCOPE_IMAGE_FOLDERS``, JSON), the folder is the photo model's dataset, offered by name and count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.browser.conftest import checked_page
from tests.browser.page_helpers import api
from tests.harness import live_server as run_live_server
from tests.image_folder_support import make_crops

pytestmark = pytest.mark.browser
UNIT = "/?model=efficientnet_lite0&image={image}&view=network&open=unit&layer=conv_head&channel=7"


def open_unit(page, photos: Path) -> None:
    """The Network view's unit detail for conv_head channel 7, on the tabby photo."""
    response = page.request.post("/api/images", multipart={"file": {
        "name": "cat.jpg", "mimeType": "image/jpeg", "buffer": (photos / "cat.jpg").read_bytes()}})
    assert response.ok, response.text()
    page.goto(UNIT.format(image=response.json()["image_id"]))


def examples_note(page) -> str:
    page.wait_for_selector(".chan-examples img", timeout=240_000)
    return page.locator(".chan-note").first.inner_text()


def test_without_a_folder_the_panel_says_how_few_images(page, photos: Path, shots: Path) -> None:
    open_unit(page, photos)
    note = examples_note(page)
    assert "over the 9 offline gallery photos" in note and "Only 9 images" in note and "--image-folder" in note
    assert page.locator(".chan-dataset").input_value() == "photos"
    page.locator("section.chan").screenshot(path=str(shots / "channel-examples-photos.png"))


def test_a_named_folder_is_the_photo_models_dataset(browser, console, photos: Path, shots: Path,
                                                    tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = make_crops(photos, tmp_path_factory.mktemp("crops"), per_photo=4)
    env = {"CONVSCOPE_IMAGE_FOLDERS": json.dumps({"crops": str(folder)}),
           "CONVSCOPE_CHANNEL_CACHE_DIR": str(tmp_path_factory.mktemp("channels"))}
    with run_live_server(tmp_path_factory.mktemp("folder-server"), env=env, threads=None, start_timeout_s=180) as server:
        with checked_page(browser, server.url, console) as page:
            open_unit(page, photos)
            note = examples_note(page)
            assert "over the 36 images of folder 'crops' in 9 classes" in note and "Only" not in note
            select = page.locator(".chan-dataset")
            assert select.input_value() == "folder:crops"
            assert select.locator("option[value='folder:crops']").inner_text() == "Folder crops (36)"
            truth = api(page, "/api/models/efficientnet_lite0/layers/conv_head/channels/7/examples.json?k=9")
            assert truth["dataset"] == "folder:crops"
            shown = page.get_attribute(".chan-examples", "data-values")
            assert [float(v) for v in shown.split(",")] == [e["value"] for e in truth["examples"]]
            page.locator("section.chan").screenshot(path=str(shots / "channel-examples-folder.png"))
