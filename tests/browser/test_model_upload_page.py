"""The drop-in flow: "Open a model…" in the model picker takes an .onnx file and a labels file, and the page then
shows that model (its layers, its predictions with those labels); dropping an .onnx file onto the page does the
same; a file the server refuses shows its reason."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.browser.page_helpers import api, open_page, query, upload_photo, wait_for_predictions
from tests.imported_support import export_torch

pytestmark = pytest.mark.browser
LABELS = ["circle", "square", "triangle"]


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    folder = tmp_path_factory.mktemp("page-model")
    onnx_path = export_torch(net, torch.zeros(1, 3, 48, 48), folder / "shape-net.onnx", dynamo=False)
    labels = folder / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    return onnx_path, labels


def _wait_for_uploaded_model(page, previous: str | None = None) -> str:
    page.wait_for_function("""previous => {
        const v = new URL(location.href).searchParams.get('model') || '';
        return v.startsWith('upload-') && v !== previous
            && document.querySelector(`table.arch-table[data-model='${v}'] tbody tr`) !== null;
    }""", arg=previous, timeout=300_000)  # the first conversion starts the converter's process (torch imports)
    return query(page)["model"]


def test_open_a_model_from_the_picker_and_drop_one_on_the_page(page, model_files, photos: Path, shots: Path) -> None:
    onnx_path, labels = model_files
    open_page(page)
    upload_photo(page, photos / "cat.jpg")
    assert page.locator("#model-select option", has_text="Open a model").count() == 1
    with page.expect_file_chooser() as chooser:
        page.select_option("#model-select", "__open-model__")
    chooser.value.set_files([str(onnx_path), str(labels)])
    page.locator("[data-notice='model-upload']").wait_for()  # "Converting shape-net.onnx…"
    page.screenshot(path=str(shots / "model-upload-converting-1280.png"))
    model_id = _wait_for_uploaded_model(page)
    page.screenshot(path=str(shots / "model-upload-opened-1280.png"))
    assert page.locator("#model-select").input_value() == model_id  # the picker shows it, in its group
    assert page.locator("#model-detail").inner_text().startswith("shape-net")
    rows = wait_for_predictions(page)
    assert {row["label"] for row in rows} <= set(LABELS) and len(rows) == 3  # the labels file's names
    expected = api(page, f"/api/models/{model_id}/images/{query(page)['image']}/predictions")["predictions"]
    assert [row["label"] for row in rows] == [p["label"] for p in expected]
    layers = page.locator("table.arch-table tbody tr").all_inner_texts()
    assert any("Conv2d" in row and "ONNX /0/Conv" in row for row in layers)  # the graph's node name beside
    page.keyboard.press("p")  # projector mode: the ONNX names are large enough too
    sizes = page.eval_on_selector_all(".onnx-node", "nodes => nodes.map(n => parseFloat(getComputedStyle(n).fontSize))")
    assert sizes and min(sizes) >= 16, sizes
    page.screenshot(path=str(shots / "model-upload-projector-1280.png"))
    page.keyboard.press("p")

    # Drag and drop: the .onnx file dropped anywhere on the page becomes a model too (not an image upload).
    data = base64.b64encode(onnx_path.read_bytes()).decode()
    page.evaluate("""data => {
        const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], 'dropped-net.onnx', { type: 'application/octet-stream' }));
        document.body.dispatchEvent(new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true }));
    }""", data)
    dropped = _wait_for_uploaded_model(page, previous=model_id)
    assert page.locator("#model-detail").inner_text().startswith("dropped-net")
    assert dropped != model_id


def test_a_refused_file_shows_the_reason(page, console) -> None:
    console.allow(r"415")  # the refusal is the point
    open_page(page)
    with page.expect_file_chooser() as chooser:
        page.select_option("#model-select", "__open-model__")
    chooser.value.set_files([{"name": "net.pth", "mimeType": "application/octet-stream",
                              "buffer": b"\x80\x04\x95" + b"\0" * 64}])
    notice = page.locator("[data-notice='model-upload']")
    notice.wait_for()
    assert "could not be opened" not in notice.inner_text() or "pickle" in notice.inner_text()
