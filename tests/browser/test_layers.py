"""The Layers view in a real browser: open a layer from the strip, sort its channels, read a value under
the pointer, open its filters — every number compared with the API's own .npy / JSON."""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser


def query(page) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}


def api_json(page, path: str) -> dict:
    response = page.request.get(path)
    assert response.ok, f"{path}: {response.status} {response.text()}"
    return response.json()


def api_npy(page, path: str) -> np.ndarray:
    response = page.request.get(path)
    assert response.ok, f"{path}: {response.status}"
    return np.load(io.BytesIO(response.body()), allow_pickle=False)


def upload(page, data: bytes, name: str = "image.png") -> str:
    response = page.request.post(
        "/api/images", multipart={"file": {"name": name, "mimeType": "image/png", "buffer": data}}
    )
    assert response.status == 201, response.text()
    return response.json()["image_id"]


def synthetic_picture() -> bytes:
    """A 64×64 picture with edges in several orientations, so channels differ."""
    yy, xx = np.mgrid[0:64, 0:64]
    rgb = np.stack([(xx * 4) % 256, (yy * 4) % 256, ((xx + yy) // 8 % 2) * 255], axis=-1).astype(np.uint8)
    rgb[20:44, 20:44] = (250, 40, 40)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def wait_for_layer(page, layer: str) -> None:
    page.wait_for_selector(f".channel-grid[data-layer='{layer}'][data-open-ms] canvas")


def test_open_sort_hover_and_filters(page, shots: Path) -> None:
    page.goto("/")
    image_id = upload(page, synthetic_picture())
    model = "tinyvgg-shapes"
    page.goto(f"/?model={model}&image={image_id}&view=layers")
    page.wait_for_selector(".arch-strip button[data-layer='block1.2']")
    variant = api_json(page, f"/api/models/{model}")["weights_used"]
    base = f"/api/models/{model}/images/{image_id}/layers/block1.2"

    # open a layer by clicking its box in the strip
    page.click(".arch-strip button[data-layer='block1.2']")
    wait_for_layer(page, "block1.2")
    assert query(page)["layer"] == "block1.2"
    values = api_npy(page, f"{base}/activations.npy?weights={variant}")
    assert page.locator(".channel-grid figure.tile").count() == values.shape[0] == 10
    assert page.is_visible(".arch-strip button[data-layer='block1.2'].is-selected")

    # the legend's numbers are the layer's range (batch-free conv output is signed: diverging, symmetric)
    atlas = api_json(page, f"{base}/atlas.json?weights={variant}&scale=layer")
    legend_low = float(page.get_attribute(".layer-legend .legend", "data-low"))
    legend_high = float(page.get_attribute(".layer-legend .legend", "data-high"))
    m = float(np.abs(values).max())
    assert (legend_low, legend_high) == pytest.approx((-m, m), rel=1e-5)
    assert atlas["tiles"]["high"][0] == pytest.approx(m, rel=1e-6)

    # sort by max: tiles follow the API's per-channel maxima, largest first
    page.click(".layer-toolbar [data-key='sort'] button[data-value='max']")
    page.wait_for_selector(".channel-grid[data-sort='max']")
    assert query(page)["sort"] == "max"
    order = page.eval_on_selector_all(".channel-grid figure.tile", "tiles => tiles.map(t => Number(t.dataset.channel))")
    maxima = values.reshape(10, -1).max(axis=1)
    assert order == sorted(range(10), key=lambda c: (-maxima[c], c))

    # hover a cell of the second tile and read its value
    channel = order[1]
    canvas = page.locator(f".channel-grid figure.tile[data-channel='{channel}'] canvas")
    canvas.scroll_into_view_if_needed()  # the explanation panel above the toolbar may push it below the fold
    box = canvas.bounding_box()
    H, W = values.shape[1:]
    y, x = 17, 40
    page.mouse.move(box["x"] + (x + 0.5) * box["width"] / W, box["y"] + (y + 0.5) * box["height"] / H)
    page.wait_for_function(
        "([c, y, x]) => { const d = document.querySelector('.value-readout').dataset;"
        " return d.channel === String(c) && d.y === String(y) && d.x === String(x); }",
        arg=[channel, y, x],
    )
    shown = float(page.get_attribute(".value-readout", "data-value"))
    assert shown == pytest.approx(float(values[channel, y, x]), rel=1e-6, abs=1e-7)
    assert f"channel {channel}" in page.text_content(".value-readout")
    page.screenshot(path=str(shots / "layers-hover-1280x720.png"))

    # click it: the URL holds the channel, and the detail shows it over the input
    canvas.click()
    page.wait_for_function("c => new URLSearchParams(location.search).get('channel') === String(c)", arg=channel)
    page.wait_for_function("() => document.querySelector('.detail-map').naturalWidth > 0")
    assert page.evaluate("document.querySelector('.detail-map').naturalWidth") == W
    page.fill("#overlay-opacity", "30")
    page.dispatch_event("#overlay-opacity", "input")
    assert page.evaluate("getComputedStyle(document.querySelector('.detail-map')).opacity") == "0.3"

    # filters beside the maps: the kernel picture, the selected kernel outlined, the histogram
    page.wait_for_function("() => document.querySelector('.filters-picture').naturalWidth > 0")
    filters = api_json(
        page,
        f"/api/models/{model}/layers/block1.2/filters.json?weights={variant}&out_start=0&out_count=10&in_start=0&in_count=10",
    )
    assert page.evaluate("document.querySelector('.filters-picture').naturalWidth") == filters["image"]["width"]
    assert page.is_visible(".kernel-outline")
    hist = api_json(page, f"/api/models/{model}/layers/block1.2/histogram.json?weights={variant}&bins=40")
    assert page.locator(".histogram .histogram-bar").count() == len(hist["counts"]) == 40
    trained_button = page.locator(".filters-toggle button[data-variant='trained']")
    if variant == "trained":
        page.click(".filters-toggle button[data-variant='untrained']")
        page.wait_for_function("() => document.querySelector('.filters-panel').dataset.variant === 'untrained'")
        assert query(page)["fw"] == "untrained"
        # the panel's variant is set at once, the picture once its atlas has been fetched
        page.wait_for_function("() => document.querySelector('.filters-picture').getAttribute('src').includes('weights=untrained')")
    else:
        assert trained_button.is_disabled()  # nothing trained to compare with on this server
    page.screenshot(path=str(shots / "layers-filters-1280x720.png"), full_page=True)


def test_vector_layer_values(page) -> None:
    page.goto("/")
    image_id = upload(page, synthetic_picture())
    page.goto(f"/?model=lenet5&image={image_id}&view=layers&layer=classifier.3")
    wait_for_layer(page, "classifier.3")
    values = api_npy(page, f"/api/models/lenet5/images/{image_id}/layers/classifier.3/activations.npy")
    mosaic = page.locator(".vector-mosaic")
    cols = page.evaluate("document.querySelector('.vector-mosaic').width")
    rows = page.evaluate("document.querySelector('.vector-mosaic').height")
    mosaic.scroll_into_view_if_needed()
    box = mosaic.bounding_box()
    k = 13  # index order: feature k sits at row k // cols, column k % cols
    page.mouse.move(
        box["x"] + (k % cols + 0.5) * box["width"] / cols, box["y"] + (k // cols + 0.5) * box["height"] / rows
    )
    page.wait_for_function("k => document.querySelector('.value-readout').dataset.channel === String(k)", arg=k)
    assert float(page.get_attribute(".value-readout", "data-value")) == pytest.approx(float(values[k]), rel=1e-6)


def test_pure_modules_in_the_browser(page) -> None:
    """The view's index math and .npy reader, run in Chromium against Python's answers."""
    page.goto("/")
    image_id = upload(page, synthetic_picture())
    url = f"/api/models/tinyvgg-shapes/images/{image_id}/layers/block1.0/activations.npy"
    expected = api_npy(page, url)
    result = page.evaluate(
        """async (url) => {
            const math = await import('/static/js/feature-maps/channel-math.js');
            const { parseNpy } = await import('/static/js/common/npy.js');
            const { formatValue } = await import('/static/js/common/format.js');
            const arr = parseNpy(await (await fetch(url)).arrayBuffer());
            const atlas = { grid: { columns: 4 }, tile: { width: 10, height: 6 } };
            return {
                shape: arr.shape, dtype: arr.dtype, sum: arr.data.reduce((a, b) => a + b, 0),
                value: math.valueAt(arr, 3, 5, 7),
                order: math.sortChannels(5, 'mean', { mean: [0.1, 0.5, 0.5, -1, 2] }),
                index: math.sortChannels(3, 'index', null),
                tile: math.tileRect(6, atlas),
                cell: math.cellAt(99.9, 0, 100, 50, 6, 10),
                outside: math.cellAt(100, 0, 100, 50, 6, 10),
                ticks: math.legendTicks(-2, 4),
                page: math.kernelPageStart(70, 32),
                text: [formatValue(0.000012345), formatValue(-3.14159), formatValue(0)],
            };
        }""",
        url,
    )
    assert result["shape"] == list(expected.shape) and result["dtype"] == "<f4"
    assert result["sum"] == pytest.approx(float(expected.astype(np.float64).sum()), rel=1e-4)
    assert result["value"] == pytest.approx(float(expected[3, 5, 7]), rel=1e-7)
    assert result["order"] == [4, 1, 2, 0, 3] and result["index"] == [0, 1, 2]
    assert result["tile"] == {"x": 20, "y": 6, "width": 10, "height": 6}
    assert result["cell"] == {"x": 9, "y": 0} and result["outside"] is None
    assert result["ticks"] == [-2, 0, 4] and result["page"] == 64
    assert result["text"] == ["1.23e-5", "-3.142", "0"]
