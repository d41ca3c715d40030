"""How long VGG-16 takes to show a layer's first channels in the real page (was a browser "test" that
asserted nothing; a timing belongs here). Baseline measured in the same run: one predictions request
(one forward pass, the model loaded). Prints ratios against it.

Run:  .venv/bin/python bench/bench_layer_opening.py   (needs /usr/bin/chromium, Playwright and the photos)
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from harness import SHARED_DATA, live_server
from playwright.sync_api import sync_playwright

LAYERS = ("features.12", "features.28", "classifier.0")


def wait_for_layer(page, layer: str) -> None:  # noqa: ANN001
    page.wait_for_selector(f".channel-grid[data-layer='{layer}'][data-open-ms] canvas", timeout=600_000)


def main() -> None:
    photo = SHARED_DATA / "images" / "dog.jpg"
    with tempfile.TemporaryDirectory() as tmp, live_server(Path(tmp), threads=None) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                     args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(base_url=server.url, viewport={"width": 1280, "height": 720})
            page.goto("/")
            answer = page.request.post("/api/images", multipart={
                "file": {"name": photo.name, "mimeType": "image/jpeg", "buffer": photo.read_bytes()}})
            image_id = answer.json()["image_id"]
            predictions = f"/api/models/vgg16/images/{image_id}/predictions"
            page.request.get(predictions)  # build the model first, as the Overview tab would have
            started = time.perf_counter()
            page.request.get(predictions)
            forward_s = time.perf_counter() - started
            started = time.perf_counter()
            page.goto(f"/?model=vgg16&image={image_id}&view=layers&layer=features.0")
            wait_for_layer(page, "features.0")
            cold_s = time.perf_counter() - started
            print(f"baseline: predictions request (one forward pass, model loaded) {forward_s * 1000:.0f} ms")
            print(f"first layer (one capturing forward pass): {cold_s * 1000:.0f} ms page load to first channels, "
                  f"{page.get_attribute('.channel-grid', 'data-open-ms')} ms in the view, "
                  f"{cold_s / forward_s:.1f}× the baseline")
            page.wait_for_selector(".arch-strip.has-thumbs")
            for layer in LAYERS:
                started = time.perf_counter()
                page.click(f".arch-strip button[data-layer='{quote(layer, safe='.')}']")
                wait_for_layer(page, layer)
                wall = time.perf_counter() - started
                print(f"open {layer} (cached forward pass): {wall * 1000:.0f} ms click to first channels, "
                      f"{page.get_attribute('.channel-grid', 'data-open-ms')} ms in the view, "
                      f"{wall / forward_s:.2f}× the baseline")
        finally:
            browser.close()


if __name__ == "__main__":
    main()
