"""The Sandbox view in Chromium: the grids it animates equal F.conv2d / pooling, every control changes the
computation, the URL reproduces it, presets and Gabor load, exports work, the extras show their results."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

pytestmark = pytest.mark.browser


def canvas(page) -> dict:
    return page.eval_on_selector("#sandbox-canvas", "c => ({...c.dataset})")


def wait_shape(page, shape: str) -> dict:
    page.wait_for_function("s => document.querySelector('#sandbox-canvas')?.dataset.outputShape === s", arg=shape)
    return canvas(page)


def query(page) -> dict:
    return page.evaluate("Object.fromEntries(new URLSearchParams(location.search))")


def grid_values(page, label: str) -> list[list[float]]:
    return page.eval_on_selector(f"table.grid-editor[aria-label='{label}']",
                                 "t => [...t.rows].map(r => [...r.cells].map(c => Number(c.firstChild.value)))")


def wait_first_value(page, want: float) -> None:
    """Until the recomputed scene shows ``want`` as its first output cell (scrubbed to step 0)."""
    page.wait_for_function("""w => {
        const scrub = document.querySelector('.player-scrub');
        if (scrub && scrub.value !== '0') { scrub.value = '0'; scrub.dispatchEvent(new Event('input')); }
        const c = document.querySelector('#sandbox-canvas');
        return c && c.dataset.frame === '0' && Math.abs(Number(c.dataset.value) - w) <= 1e-6 * Math.max(1, Math.abs(w));
    }""", arg=want)


def values_at_every_step(page) -> list[float]:
    """Step through the whole animation and read each cell's value from the canvas."""
    count = int(canvas(page)["count"])
    page.eval_on_selector(".player-scrub", "s => { s.value = '0'; s.dispatchEvent(new Event('input')); }")
    out = []
    for i in range(count):
        page.wait_for_function("i => document.querySelector('#sandbox-canvas').dataset.frame === String(i)", arg=i)
        out.append(float(canvas(page)["value"]))
        if i < count - 1:
            page.click("[data-action='forward']")
    return out


def test_classic_slide_example_steps_through(page, shots: Path) -> None:
    page.goto("/?view=sandbox")
    state = wait_shape(page, "3x3")
    assert int(state["count"]) == 9
    assert values_at_every_step(page) == [4, 3, 4, 2, 4, 3, 2, 3, 4]
    page.locator("#sandbox-canvas").screenshot(path=str(shots / "sandbox-slide.png"))


@pytest.mark.parametrize("padding,stride,dilation,mode", [("same", 2, 1, "convolution"), ("full", 1, 2, "cross-correlation"),
                                                          ("2", 3, 1, "cross-correlation")])
def test_controls_change_the_computation_and_match_torch(page, padding: str, stride: int, dilation: int, mode: str) -> None:
    page.goto("/?view=sandbox&in=" + ";".join(",".join(str((r * 5 + c * 3) % 7 - 3) for c in range(7)) for r in range(6))
              + "&k=1,2,0;-1,0,3")
    wait_shape(page, "5x5")
    page.select_option("#sb-padding", padding)
    page.fill("#sb-stride", str(stride))
    page.dispatch_event("#sb-stride", "change")
    page.fill("#sb-dilation", str(dilation))
    page.dispatch_event("#sb-dilation", "change")
    page.select_option("#sb-mode", mode)
    x = np.array(grid_values(page, "Input"))
    k = np.array(grid_values(page, "Kernel"))
    kt = torch.from_numpy(k)
    if mode == "convolution":
        kt = torch.flip(kt, (0, 1))
    geometry = page.request.post("/api/sandbox/convolve", data={
        "input": x.tolist(), "kernel": k.tolist(), "padding": int(padding) if padding.isdigit() else padding,
        "stride": stride, "dilation": dilation, "mode": mode}).json()["geometry"]
    p = geometry["padding"]
    want = F.conv2d(F.pad(torch.from_numpy(x)[None, None], (p["left"], p["right"], p["top"], p["bottom"])), kt[None, None],
                    stride=stride, dilation=dilation)[0, 0].numpy()
    wait_shape(page, f"{want.shape[0]}x{want.shape[1]}")
    assert np.allclose(values_at_every_step(page), want.ravel(), atol=1e-9)
    state = query(page)
    assert state["pad"] == padding and state["stride"] == str(stride)
    # the link reproduces the same computation
    page.goto(page.url)
    assert wait_shape(page, f"{want.shape[0]}x{want.shape[1]}")["count"] == str(want.size)


def test_activation_bias_and_editing_a_cell(page) -> None:
    page.goto("/?view=sandbox&bias=-3&act=relu")
    wait_shape(page, "3x3")
    assert values_at_every_step(page) == [1, 0, 1, 0, 1, 0, 0, 0, 1]
    page.fill("table.grid-editor[aria-label='Input'] input[data-r='0'][data-c='0']", "5")
    page.dispatch_event("table.grid-editor[aria-label='Input'] input[data-r='0'][data-c='0']", "change")
    page.wait_for_function("() => new URLSearchParams(location.search).get('in').startsWith('5,')")
    wait_first_value(page, 5)  # (5+1+1+1+1) − 3
    assert values_at_every_step(page)[0] == 5


def test_tiling_message_and_empty_output(page) -> None:
    page.goto("/?view=sandbox&in=" + ";".join(["1,2,3,4,5,6"] * 6) + "&stride=2")
    wait_shape(page, "2x2")
    assert "do not tile" in page.text_content(".sandbox-formula")
    assert "W_out = ⌊(6 + 0 + 0 − 1·(3 − 1) − 1) / 2⌋ + 1 = 2" in page.text_content(".sandbox-formula")
    page.fill("#sb-dilation", "4")
    page.dispatch_event("#sb-dilation", "change")
    page.wait_for_function("() => document.querySelector('.sandbox-formula .error-text')")
    assert "no output" in page.text_content(".sandbox-formula .error-text")


def test_pooling_ops(page) -> None:
    grid = [[1, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]]
    page.goto("/?view=sandbox&op=pool&in=" + ";".join(",".join(map(str, r)) for r in grid))
    wait_shape(page, "2x2")
    assert values_at_every_step(page) == [6, 8, 3, 4]
    page.select_option("#sb-pool-op", "l2")
    page.wait_for_function("() => new URLSearchParams(location.search).get('pop') === 'l2'")
    want = F.lp_pool2d(torch.tensor(grid, dtype=torch.float64)[None, None], 2, 2)[0, 0].numpy().ravel()
    wait_first_value(page, float(want[0]))
    assert np.allclose(values_at_every_step(page), want)


def test_presets_and_gabor(page) -> None:
    page.goto("/?view=sandbox")
    wait_shape(page, "3x3")
    page.wait_for_selector("#sb-preset option[value='sobel_x']", state="attached")
    page.select_option("#sb-preset", "sobel_x")
    page.wait_for_function("() => new URLSearchParams(location.search).get('k') === '-1,0,1;-2,0,2;-1,0,1'")
    assert grid_values(page, "Kernel") == [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    page.select_option("#sb-preset", "gabor")
    page.wait_for_function("() => (new URLSearchParams(location.search).get('k') || '').split(';').length === 7")
    g = page.request.get("/api/sandbox/kernels/gabor?size=7&theta=0&wavelength=4").json()["kernel"]
    assert np.allclose(grid_values(page, "Kernel"), g, atol=1e-4)
    page.select_option("#sb-example", "impulse_7x7")
    page.wait_for_function("() => (new URLSearchParams(location.search).get('in') || '').split(';').length === 7")


def test_exports_and_extras(page, shots: Path) -> None:
    page.goto("/")
    picture = np.zeros((48, 64, 3), dtype=np.uint8)
    picture[:, 32:] = 255
    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, format="PNG")
    image_id = page.request.post("/api/images", multipart={"file": {"name": "edge.png", "mimeType": "image/png",
                                                                     "buffer": buf.getvalue()}}).json()["image_id"]
    page.goto(f"/?view=sandbox&image={image_id}&k=-1,0,1;-2,0,2;-1,0,1")
    wait_shape(page, "3x3")
    with page.expect_download() as gif_download:
        page.click(".sandbox-export [data-export='gif']")
    gif = Image.open(gif_download.value.path())
    assert gif.format == "GIF" and gif.n_frames == 9
    page.wait_for_function("() => document.querySelector('.sandbox-filtered.pixelated')?.naturalWidth === 64")
    assert "values from −4 to 4" in page.text_content(".sandbox-card .hint")
    page.wait_for_function("() => document.querySelector('.sandbox-result')?.textContent.includes('pooled')")
    page.select_option("#sb-example", "square_10x10")
    page.wait_for_function("() => document.querySelector('.sandbox-result').textContent.includes('largest difference 0)')")
    page.screenshot(path=str(shots / "sandbox-page.png"), full_page=True)


def test_start_from_a_crop_of_the_current_image(page) -> None:
    page.goto("/")
    picture = np.zeros((40, 40, 3), dtype=np.uint8)
    picture[:, 20:] = 200
    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, format="PNG")
    image_id = page.request.post("/api/images", multipart={"file": {"name": "step.png", "mimeType": "image/png",
                                                                     "buffer": buf.getvalue()}}).json()["image_id"]
    page.goto(f"/?view=sandbox&image={image_id}")
    wait_shape(page, "3x3")
    page.wait_for_selector("#sb-example option[value='crop']", state="attached")
    page.select_option("#sb-example", "crop")
    page.wait_for_function("() => (new URLSearchParams(location.search).get('in') || '').split(';').length === 8")
    crop = page.request.get(f"/api/sandbox/images/{image_id}/crop?size=8&fit=32").json()["input"]
    assert grid_values(page, "Input") == crop
    assert wait_shape(page, "6x6")["count"] == "36"


def test_activation_plot_marks_the_current_cell(page, shots: Path) -> None:
    """'then activation' draws f with this cell's (x, f(x)) marked: x is the server's bias-added sum, the mark's
    height is the server's activated value, and the plotted f passes through it (PyTorch's leaky ReLU)."""
    page.goto("/?view=sandbox&bias=-3.5&act=leaky_relu")
    wait_shape(page, "3x3")
    seen = []
    count = int(canvas(page)["count"])
    for i in range(count):
        page.wait_for_function(
            "i => { const c = document.querySelector('#sandbox-canvas'); const p = document.querySelector('#sandbox-activation-plot');"
            " return c.dataset.frame === String(i) && p && !p.hidden && p.dataset.plot"
            " && JSON.parse(p.dataset.plot).torch === Number(c.dataset.value); }", arg=i)
        plot = page.eval_on_selector("#sandbox-activation-plot", "p => JSON.parse(p.dataset.plot)")
        assert plot["type"] == "LeakyReLU"
        x = plot["x"]
        assert plot["torch"] == pytest.approx(float(F.leaky_relu(torch.tensor(x, dtype=torch.float64), 0.01)), abs=1e-9)
        assert plot["fx"] == pytest.approx(plot["torch"], abs=1e-9)
        seen.append(x)
        if i == 0:
            page.screenshot(path=str(shots / "sandbox-activation-plot.png"))
        if i < count - 1:
            page.click("[data-action='forward']")
    assert seen[0] == pytest.approx(0.5)  # the classic example's first window sums to 4, plus bias −3.5
    assert any(x < 0 for x in seen) and any(x > 0 for x in seen)
    page.select_option("#sb-activation", "none")
    page.wait_for_function("() => document.querySelector('#sandbox-activation-plot').hidden")
