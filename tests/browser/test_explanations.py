"""Views that explain themselves, and the bugs of issue 12 that live in the Layers / Saliency / Step-through
views: numbers quoted by explanations are recomputed here from the model's JSON; the Grad-CAM walkthrough
shows the server's numbers; maps over the image are placed by receptive field; the output layer is labelled
with class names; counts agree; a stale pos= leaves the URL."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.browser.page_helpers import api
from tests.browser.test_projector import upload_sample

pytestmark = pytest.mark.browser


def fmt(v: float) -> str:
    return (str(int(v)) if float(v).is_integer() else str(round(v, 2))).replace("-", "−")


def test_receptive_field_explanation_quotes_this_layers_numbers(page, shots: Path) -> None:
    page.goto("/")
    image = upload_sample(page, "mnist-test-3")
    page.goto(f"/?model=lenet5&image={image}&view=step-through&layer=features.3")
    page.wait_for_selector("#step-through-canvas[data-ready='1']")
    layers = {layer["name"]: layer for layer in api(page, "/api/models/lenet5")["layers"]}
    layer, before = layers["features.3"], layers["features.2"]  # the conv reads the pooling's output
    k, d, s = layer["kernel_size"][0], layer["dilation"][0], layer["stride"][0]
    r_in, j_in = before["receptive_field"]["size"][0], before["receptive_field"]["jump"][0]
    r, j = layer["receptive_field"]["size"][0], layer["receptive_field"]["jump"][0]
    assert r == r_in + (k - 1) * d * j_in and j == j_in * s  # the model's JSON agrees with the formula
    expected_r = f"r = r_in + (k − 1)·d·j_in = {fmt(r_in)} + ({k} − 1)·{d}·{fmt(j_in)} = {fmt(r)}"
    expected_j = f"jump = j_in·stride = {fmt(j_in)}·{s} = {fmt(j)}"
    page.click(".explain-panel summary")
    text = page.text_content(".explain-panel dd[data-concept='receptive-field']")
    assert expected_r in text and expected_j in text and "of features.2" in text
    assert f"sees {r}×{r} input pixels" in text
    # the "?" beside the controls says the same on keyboard focus, not only on hover
    page.focus("[data-for='rf'] .explain-q")
    tip = page.locator("[data-for='rf'] .explain-tip")
    assert tip.is_visible() and expected_r in tip.text_content()
    page.screenshot(path=str(shots / "explain-step-through-rf.png"))
    # the output-size line under the canvas uses this layer's numbers too
    geometry = page.text_content(".step-through-geometry")
    h_in = before["output_shape"][1]
    assert f"H: ⌊({h_in} + 0 + 0 − 1·(5−1) − 1) / 1⌋ + 1 = {layer['output_shape'][1]}" in geometry


def test_layers_view_explains_scale_and_tile_numbers(page) -> None:
    page.goto("/")
    image = upload_sample(page, "shapes-test-0")
    page.goto(f"/?model=tinyvgg-shapes&image={image}&view=layers&layer=block1.0")
    page.wait_for_selector(".grid-host figure.tile")
    for concept in ("scale", "tile-number"):
        button = page.locator(f".layer-toolbar .explain-q[data-concept='{concept}']")
        button.hover()
        tip = button.locator("xpath=following-sibling::span[@role='tooltip']")
        assert tip.is_visible()
    assert "Channel: each tile stretched to its own minimum and maximum" in page.text_content(".layer-toolbar")
    # the number under each tile is the channel's mean, as the explanation says
    stats = api(page, f"/api/models/tinyvgg-shapes/images/{image}/layers/block1.0/stats.json")
    first = page.locator(".grid-host figure.tile").first
    c = int(first.get_attribute("data-channel"))
    shown = float(first.locator(".tile-stat").text_content().replace("−", "-"))
    assert shown == pytest.approx(stats["mean"][c], rel=0.01, abs=0.001)


def test_layer_map_is_placed_by_receptive_field(page, shots: Path) -> None:
    page.goto("/")
    image = upload_sample(page, "shapes-test-0")
    page.goto(f"/?model=tinyvgg-shapes&image={image}&view=layers&layer=block2.3&channel=3")
    page.wait_for_selector(".detail-stage[data-channel='3'] img.detail-map[data-placement]")
    layer = next(x for x in api(page, "/api/models/tinyvgg-shapes")["layers"] if x["name"] == "block2.3")
    field, (_, h, w) = layer["receptive_field"], layer["output_shape"]
    stage = page.locator(".detail-stage").bounding_box()
    overlay = page.locator(".detail-stage img.detail-map").bounding_box()
    px = stage["width"] / 64
    assert overlay["x"] - stage["x"] == pytest.approx((field["start"][1] + 0.5 - field["jump"][1] / 2) * px, abs=1)
    assert overlay["y"] - stage["y"] == pytest.approx((field["start"][0] + 0.5 - field["jump"][0] / 2) * px, abs=1)
    assert overlay["width"] == pytest.approx(w * field["jump"][1] * px, abs=1)
    assert overlay["height"] == pytest.approx(h * field["jump"][0] * px, abs=1)
    assert overlay["width"] < stage["width"] - 4  # 26×26 at jump 2 is 52 px of 64: not stretched
    assert "placed by receptive field" in page.text_content(".detail-note")
    page.screenshot(path=str(shots / "layers-map-by-receptive-field.png"))


def test_output_layer_lists_class_names_and_counts_agree(page) -> None:
    page.goto("/")
    image = upload_sample(page, "mnist-test-3")
    page.goto(f"/?model=lenet5&image={image}&view=layers&layer=classifier.5")
    page.wait_for_selector(".class-list .class-row")
    classes = api(page, "/api/models/lenet5/classes")["classes"]
    rows = page.eval_on_selector_all(".class-row", "rows => rows.map(r => [Number(r.dataset.channel), r.querySelector('.class-name').textContent, r.querySelector('.class-value').textContent])")
    assert [name for _, name, _ in rows] == [classes[c] for c, _, _ in rows] and len(rows) == 10
    response = page.request.get(f"/api/models/lenet5/images/{image}/layers/classifier.5/activations.npy")
    import io

    logits = np.load(io.BytesIO(response.body()))
    for c, _, value in rows:
        assert float(value.replace("−", "-")) == pytest.approx(float(logits[c]), rel=0.01, abs=0.01)
    # the strip counts layers the way the architecture table does (leaf layers), blocks apart
    model = api(page, "/api/models/lenet5")
    leaves = sum(1 for layer in model["layers"] if layer["leaf"])
    assert page.text_content(".layers-strip-card .card-note").startswith(f"{leaves} layers of LeNet-5")


def test_gradcam_walkthrough_shows_the_servers_numbers(page, shots: Path) -> None:
    page.goto("/")
    image = upload_sample(page, "shapes-test-0")
    page.goto(f"/?model=tinyvgg-shapes&image={image}&view=saliency&method=gradcam&target=3")
    page.wait_for_selector(".gc-card .gc-body:not([hidden]) .gc-figure")
    layer = page.get_attribute(".gc-card", "data-layer")
    steps = api(page, f"/api/models/tinyvgg-shapes/images/{image}/saliency/gradcam-steps.json?layer={layer}&target=3&top=6")
    assert page.get_attribute(".gc-card", "data-target") == "3"
    assert json.loads(page.get_attribute(".gc-bars", "data-order")) == steps["alpha_order"]
    terms = json.loads(page.get_attribute(".gc-formula", "data-terms"))
    assert [t["channel"] for t in terms] == [t["channel"] for t in steps["top"]]
    assert [t["alpha"] for t in terms] == pytest.approx([t["alpha"] for t in steps["top"]], rel=1e-6)
    figures = page.eval_on_selector_all(".gc-maps:not(.gc-result) .gc-figure", "fs => fs.map(f => [f.dataset.name, f.querySelector('figcaption strong').textContent])")
    assert [name for name, _ in figures] == [f"channel-{t['channel']}" for t in steps["top"]]
    for (_, caption), t in zip(figures, steps["top"]):
        assert caption.endswith(f"α = {t['alpha']:.4f}".replace("-", "−")) or f"{abs(t['alpha']):.4f}" in caption
    result = page.text_content(".gc-result")
    assert f"max {steps['relu']['max']:.3f}" in result
    assert f"{round(steps['relu']['positive_fraction'] * 100)}% of positions positive" in result
    page.locator(".gc-card").screenshot(path=str(shots / "gradcam-walkthrough.png"))


def test_stale_step_through_position_leaves_the_url(page) -> None:
    page.goto("/")
    image = upload_sample(page, "shapes-test-0")
    page.goto(f"/?model=tinyvgg-shapes&image={image}&view=step-through&layer=block1.0&pos=3,4")
    page.wait_for_selector("#step-through-canvas[data-ready='1'][data-cell='3,4']")
    page.click("#view-tabs button[data-view='layers']")
    page.wait_for_selector(".grid-host figure.tile")
    assert "pos=" not in page.url


def test_saliency_while_computing_shows_no_broken_image_or_empty_legend(page) -> None:
    page.goto("/")
    image = upload_sample(page, "shapes-test-0")
    held = []
    page.route("**/saliency/topk.json*", lambda route: held.append(route))
    with page.expect_request(lambda request: "topk.json" in request.url):
        page.goto(f"/?model=tinyvgg-shapes&image={image}&view=saliency")
    page.wait_for_function("() => document.querySelector('.sal-focus-placeholder') && !document.querySelector('.sal-focus-placeholder').hidden")
    assert held, "the top-k request should be waiting"
    assert "Computing" in page.text_content(".sal-focus-placeholder")
    broken = page.evaluate(
        "() => [...document.querySelectorAll('#view img')].filter((i) => i.checkVisibility() && !i.getAttribute('src')).length")
    assert broken == 0
    assert not page.locator(".sal-focus .sal-legend").is_visible()
    for route in held:
        route.continue_()
    page.unroute("**/saliency/topk.json*")
    page.wait_for_selector(".sal-focus-stack:not([hidden]) img.sal-heat[src]")
    assert page.locator(".sal-focus .sal-legend").is_visible()
    assert page.locator(".sal-focus-placeholder").is_hidden()


CLIPPED_WITHOUT_ELLIPSIS = """() => [...document.querySelectorAll('#view *, .topbar *')].filter((e) => {
  if (!e.checkVisibility() || e.tagName === 'CANVAS' || (e.children.length && e.tagName !== 'SELECT')) return false;
  const s = getComputedStyle(e);
  const clips = ['hidden', 'clip'].includes(s.overflowX);
  return clips && e.scrollWidth > e.clientWidth + 1 && s.textOverflow !== 'ellipsis' && (e.textContent || e.value || '').trim();
}).map((e) => `${e.tagName}.${e.className}: ${e.textContent.trim().slice(0, 40)}`)"""


@pytest.mark.parametrize("view", ["layers", "step-through"])
def test_cut_labels_end_with_an_ellipsis(page, view) -> None:
    """ResNet-18's long layer and type names ('layer1.0.conv1', 'AdaptiveAvgPool2d') in narrow boxes."""
    page.set_viewport_size({"width": 1024, "height": 640})
    page.goto("/")
    image = upload_sample(page, "shapes-test-0")
    page.goto(f"/?model=resnet18&weights=untrained&image={image}&view={view}&layer=layer1.0.conv1")
    page.wait_for_selector(".strip-box .strip-type" if view == "layers" else "#step-through-canvas[data-ready='1']", timeout=120_000)
    assert page.evaluate(CLIPPED_WITHOUT_ELLIPSIS) == []
    # selects are checked too: a layer name longer than the select ends with '…', and its title has it whole
    select = "#step-through-layer" if view == "step-through" else "#model-select"
    assert page.eval_on_selector(select, "s => getComputedStyle(s).textOverflow") == "ellipsis"
    if view == "step-through":
        assert page.get_attribute("#step-through-layer", "title") == "layer1.0.conv1 · Conv2d"


def test_dense_versus_conv_parameter_counts_are_computed(page) -> None:
    import torch.nn as nn

    page.goto("/")
    image = upload_sample(page, "mnist-test-3")
    page.goto(f"/?model=lenet5&image={image}&view=step-through&layer=features.3")
    page.wait_for_selector("#step-through-canvas[data-ready='1']")
    page.click(".explain-panel summary")
    text = page.text_content(".explain-panel dd[data-concept='parameters']")
    layers = {layer["name"]: layer for layer in api(page, "/api/models/lenet5")["layers"]}
    layer, before = layers["features.3"], layers["features.2"]
    conv = sum(p.numel() for p in nn.Conv2d(6, 16, 5).parameters())
    in_n, out_n = int(np.prod(before["output_shape"])), int(np.prod(layer["output_shape"]))
    dense = sum(p.numel() for p in nn.Linear(in_n, out_n).parameters())
    assert conv == layer["params"]
    assert f"= {conv:,} parameters (the model reports {layer['params']:,})" in text
    assert f"{in_n:,} × {out_n:,} + {out_n:,} = {dense:,}: {round(dense / conv):,}× more" in text


@pytest.mark.parametrize(("model", "sample", "layer"), [("lenet5", "mnist-test-3", "features.1"), ("tinyvgg-shapes", "shapes-test-0", "block1.1")])
def test_activation_is_plotted_through_pytorchs_value(page, model, sample, layer, shots: Path) -> None:
    page.goto("/")
    image = upload_sample(page, sample)
    page.goto(f"/?model={model}&image={image}&view=step-through&layer={layer}&pos=12,13")
    page.wait_for_selector("#step-through-canvas[data-ready='1'][data-cell='12,13'][data-plot]")
    plot = json.loads(page.get_attribute("#step-through-canvas", "data-plot"))
    out = np.load(__import__("io").BytesIO(page.request.get(f"/api/models/{model}/images/{image}/layers/{layer}/activations.npy").body()))
    assert plot["torch"] == pytest.approx(float(out[0, 12, 13]), rel=1e-6, abs=1e-7)
    # the curve drawn is the function PyTorch applied: it passes through the marked point
    assert plot["fx"] == pytest.approx(plot["torch"], rel=1e-5, abs=1e-6)
    page.locator("#step-through-canvas").screenshot(path=str(shots / f"activation-plot-{model}.png"))
