"""The Experiments view in the browser: each experiment driven through the real page, its numbers checked
against the API (itself checked against PyTorch and Captum in tests/api/test_experiments_api.py); a student
following the teacher's ablation and comparison; screenshots at 1280×720 and 1024×640, normal and projector
mode, with the projector's 16 px floor measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.browser.page_helpers import api, open_page, query, upload_photo
from tests.browser.test_classroom_page import new_page, wait_same_view  # noqa: F401 — the fixture, shared

pytestmark = pytest.mark.browser
SMALL = {"width": 1024, "height": 640}


def photo_on(page, photos: Path, model: str) -> str:
    open_page(page, f"/?model={model}")
    return upload_photo(page, photos / "cat.jpg")


def go(page, model: str, image: str, **keys: str) -> None:
    params = "&".join(f"{k}={v}" for k, v in {"model": model, "image": image, "view": "experiments", **keys}.items())
    page.goto(f"/?{params}")
    page.wait_for_selector(f".xp-body[data-xp='{keys.get('xp', 'ablation')}'][data-state='ready']")


def bars(page, host: str) -> list[dict]:
    return page.eval_on_selector_all(f"{host} .bar-row", "rows => rows.map(r => ({index: Number(r.dataset.index), "
                                     "probability: Number(r.dataset.probability)}))")


def rows_of(answer: list[dict]) -> list[dict]:
    return [{"index": r["index"], "probability": r["probability"]} for r in answer]


def test_ablation_in_the_page_matches_the_api(page, photos, shots) -> None:
    image = photo_on(page, photos, "lenet5")
    go(page, "lenet5", image, xp="ablation", layer="features.3", channels="1,4")
    answer = api(page, f"/api/models/lenet5/images/{image}/ablation.json?layer=features.3&channels=1,4&mode=zero&weights=trained")
    assert bars(page, ".xp-pane:nth-child(2)") == rows_of(answer["predictions"])
    assert bars(page, ".xp-pane:nth-child(1)") == rows_of(answer["baseline"])
    shown = page.eval_on_selector_all(".xp-lbar", "bars => bars.map(b => [b.dataset.layer, Number(b.dataset.value)])")
    assert shown == [[r["name"], r["relative_l2"]] for r in answer["layers"]]
    assert "2 of 16 channels of features.3 set to zero" in page.inner_text(".xp-summary")
    # shift-click adds a channel; the URL holds the selection and the page the new answer
    before = page.get_attribute(".xp-body", "data-for")
    page.click(".xp-chip[data-channel='7']", modifiers=["Shift"])
    page.wait_for_function("() => new URLSearchParams(location.search).get('channels') === '1,4,7'")
    page.wait_for_function("b => { const h = document.querySelector('.xp-body'); return h.dataset.state === 'ready'"
                           " && h.dataset.for !== b; }", arg=before)
    # everything but the top 3 by mean activation
    stats = api(page, f"/api/models/lenet5/images/{image}/layers/features.3/stats.json")
    top3 = sorted(range(16), key=lambda c: -stats["mean"][c])[:3]
    page.click(".xp-all-but-top")
    page.wait_for_function("() => new URLSearchParams(location.search).get('invert') === '1'")
    assert sorted(int(c) for c in query(page)["channels"].split(",")) == sorted(top3)
    page.wait_for_function("() => document.querySelectorAll('.xp-chip.is-edited').length === 13")
    page.wait_for_selector(".xp-body[data-state='ready']")
    page.click(".explain-panel summary")
    assert "channels of features.3" in page.inner_text(".explain-panel")
    page.screenshot(path=str(shots / "experiments-ablation-1280.png"))


def test_occlusion_probe_follows_the_drag_and_maps_the_visited_positions(page, photos, shots) -> None:
    image = photo_on(page, photos, "tinyvgg-shapes")
    page.goto(f"/?model=tinyvgg-shapes&image={image}&view=experiments&xp=probe&fill=grey&size=16")
    canvas = page.wait_for_selector(".xp-probe-canvas")
    page.wait_for_selector(".xp-class option", state="attached")
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + 40, box["y"] + 40)
    page.mouse.down()
    for step in range(12):
        page.mouse.move(box["x"] + 40 + 15 * step, box["y"] + 60 + 10 * step)
    page.mouse.up()
    page.wait_for_function("() => new URLSearchParams(location.search).get('py') !== null")
    state = query(page)
    y, x = int(state["py"]), int(state["px"])
    # the last answer shown is the one for the last position
    page.wait_for_function("k => document.querySelector('.predictions').dataset.for === k", arg=f"probe|{y}|{x}|16|grey")
    watched = int(page.input_value(".xp-class"))
    answer = page.request.post(f"/api/models/tinyvgg-shapes/images/{image}/occlusion-probe",
                               data=json.dumps({"patches": [{"y": y, "x": x, "size": 16, "fill": "grey"}], "classes": [watched]}),
                               headers={"Content-Type": "application/json"}).json()
    assert float(page.get_attribute(".xp-watched", "data-probability")) == pytest.approx(
        answer["results"][0]["classes"][0]["probability"], abs=1e-6)
    assert int(page.get_attribute(".xp-body", "data-updates")) >= 2
    page.click(".xp-map-button")
    page.wait_for_selector(".xp-map-note[data-high]")
    page.wait_for_function("() => document.querySelector('.xp-map').naturalWidth > 0")
    page.screenshot(path=str(shots / "experiments-probe-1280.png"))


def test_adversarial_in_the_page_matches_the_api(page, photos, shots) -> None:
    image = photo_on(page, photos, "lenet5")
    go(page, "lenet5", image, xp="adversarial", attack="pgd", epsilon="8", steps="3", step_size="2")
    answer = api(page, f"/api/models/lenet5/images/{image}/adversarial.json?attack=pgd&epsilon=8&steps=3&step_size=2"
                       "&weights=trained&min_flip=false")
    assert bars(page, ".xp-pane:nth-child(2) > div:nth-of-type(2)") == rows_of(answer["after"])
    page.wait_for_selector(".xp-min-flip[data-epsilon]")
    found = api(page, answer["urls"]["min_flip"])["min_flip_epsilon"]
    assert page.get_attribute(".xp-min-flip", "data-epsilon") == ("none" if found is None else str(found))
    assert "amplified ×" in page.inner_text(".xp-pert-note")
    page.fill(".xp-epsilon", "2")
    page.dispatch_event(".xp-epsilon", "change")
    page.wait_for_function("() => new URLSearchParams(location.search).get('epsilon') === '2'")
    page.wait_for_selector(".xp-body[data-state='ready']")
    page.screenshot(path=str(shots / "experiments-adversarial-1280.png"))


def test_compare_in_the_page_matches_the_api(page, photos, shots, console) -> None:
    console.allow("422 .*compare.json")  # the refusal of two input sizes, asked for below
    image = photo_on(page, photos, "lenet5")
    go(page, "lenet5", image, xp="compare", compare_model="mnist-deep", compare_weights="trained")
    answer = api(page, f"/api/models/lenet5/images/{image}/compare.json?with_model=mnist-deep&with_weights=trained&weights=trained")
    shown = page.eval_on_selector_all(".xp-cosines tr[data-layer]", "rows => rows.map(r => r.dataset.layer)")
    assert shown == [r["name"] for r in answer["layers"]]
    assert "matched by their fraction of depth" in page.inner_text(".xp-compare-status")
    page.wait_for_function("() => document.querySelectorAll('.xp-compare-pane .bar-row').length >= 10")
    page.screenshot(path=str(shots / "experiments-compare-1280.png"))
    # two panes whose inputs differ: the page says which parameter is wrong
    page.select_option(".xp-compare-model", "efficientnet_lite0")
    page.wait_for_selector(".xp-body[data-state='error']")
    assert "with_model" in page.inner_text(".xp-compare-status")


def test_a_student_follows_the_teachers_ablation_and_comparison(new_page, photos) -> None:  # noqa: F811
    teacher = new_page()
    photo_on(teacher, photos, "lenet5")
    teacher.click("text=Start class session")
    teacher.wait_for_selector(".class-code")
    student = new_page()
    student.goto(teacher.inner_text(".class-url").strip())
    student.wait_for_selector("text=Following the teacher.")
    teacher.click(".view-tabs button:has-text('Experiments')")
    teacher.wait_for_selector(".xp-body[data-xp='ablation'][data-state='ready']")
    teacher.select_option(".xp-layer", "features.0")
    teacher.click(".xp-chip[data-channel='2']")
    teacher.click(".xp-chip[data-channel='3']", modifiers=["Shift"])
    teacher.select_option(".xp-mode", "scale")
    teacher.wait_for_function("() => new URLSearchParams(location.search).get('mode') === 'scale'")
    teacher.wait_for_selector(".xp-body[data-state='ready']")
    for key in ("view", "layer", "channels", "mode"):
        student.wait_for_function("([k, v]) => new URLSearchParams(location.search).get(k) === v", arg=[key, query(teacher)[key]])
    student.wait_for_selector(".xp-body[data-xp='ablation'][data-state='ready']")
    assert student.get_attribute(".xp-body", "data-for") == teacher.get_attribute(".xp-body", "data-for")
    teacher.click(".xp-tab[data-xp='compare']")
    teacher.select_option(".xp-compare-weights", "untrained")
    teacher.wait_for_selector(".xp-body[data-xp='compare'][data-state='ready']")
    wait_same_view(student, teacher)
    student.wait_for_function("() => new URLSearchParams(location.search).get('compare_weights') === 'untrained'")
    student.wait_for_selector(".xp-body[data-xp='compare'][data-state='ready']")
    assert student.get_attribute(".xp-body", "data-for") == teacher.get_attribute(".xp-body", "data-for")


@pytest.mark.parametrize("xp", ["ablation", "probe", "adversarial", "compare"])
def test_screens_and_the_projector_font_floor(new_page, photos, shots, xp) -> None:  # noqa: F811
    for viewport, projector in ((SMALL, False), ({"width": 1280, "height": 720}, True)):
        page = new_page(viewport)
        image = photo_on(page, photos, "efficientnet_lite0")
        extra = "&present=1" if projector else ""
        page.goto(f"/?model=efficientnet_lite0&image={image}&view=experiments&xp={xp}{extra}")
        page.wait_for_selector(f".xp-body[data-xp='{xp}']")
        if xp != "probe":
            page.wait_for_selector(".xp-body[data-state='ready']")
        smallest = page.evaluate("""() => Math.min(...[...document.querySelectorAll('.xp-card *')]
            .filter(e => e.offsetParent !== null && [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim()))
            .map(e => parseFloat(getComputedStyle(e).fontSize)))""")
        assert smallest >= (16 if projector else 12), (xp, projector, smallest)
        name = f"experiments-{xp}-{viewport['width']}{'-projector' if projector else ''}.png"
        page.screenshot(path=str(shots / name))


def test_compare_steps_through_one_cell_in_both_panes(page, photos, shots) -> None:
    image = photo_on(page, photos, "lenet5")
    go(page, "lenet5", image, xp="compare", compare_weights="untrained", compare_layer="features.3", compare_cell="2,4,5")
    for pane, weights in (("0", "trained"), ("1", "untrained")):
        box = f".xp-compare-pane[data-pane='{pane}'] .xp-step"
        page.wait_for_selector(f"{box} .xp-step-lines[data-value]")
        trace = api(page, f"/api/models/lenet5/images/{image}/layers/features.3/trace?channel=2&y=4&x=5&top=3&weights={weights}")
        assert float(page.get_attribute(f"{box} .xp-step-lines", "data-value")) == pytest.approx(trace["total"], abs=1e-9)
        assert f"channel {trace['channels'][0]['index']}" in page.inner_text(box) and "bias" in page.inner_text(box)
        href = page.get_attribute(f"{box} .xp-step-link", "href")
        assert "view=step-through" in href and "pos=4%2C5" in href and f"weights={weights}" in href
    # another cell, typed in: both panes follow (same architecture: the same cell)
    page.fill(".xp-cell-y", "7")
    page.dispatch_event(".xp-cell-y", "change")
    page.wait_for_function("() => new URLSearchParams(location.search).get('compare_cell') === '2,7,5'")
    trace = api(page, f"/api/models/lenet5/images/{image}/layers/features.3/trace?channel=2&y=7&x=5&top=3&weights=untrained")
    page.wait_for_function("v => Number(document.querySelector(\".xp-compare-pane[data-pane='1'] .xp-step-lines\").dataset.value) === v",
                           arg=trace["total"])
    page.screenshot(path=str(shots / "experiments-compare-step-1280.png"), full_page=True)
    # LeNet-5 against mnist-deep: the right pane's cell is the same place of its own layer, and says so
    go(page, "lenet5", image, xp="compare", compare_model="mnist-deep", compare_weights="trained", compare_cell="1,3,3")
    page.wait_for_selector(".xp-compare-pane[data-pane='1'] .xp-step-lines[data-value], .xp-compare-pane[data-pane='1'] .xp-step .card-note")
    assert page.inner_text(".xp-compare-pane[data-pane='0'] .xp-step")
