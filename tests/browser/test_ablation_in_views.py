"""Switching channels off where the channels are shown (issue 22 §1): in the Layers, Network and
Step-through views a card turns selection on (URL key ablate=1); clicks on the view's channels (shift-click
adds) pick them, and the card shows the new top-5 beside the old, the change per class, Grad-CAM old and
new and the later layers' relative L2 — the numbers of ablation.json (itself checked against a plain
PyTorch forward hook in tests/api/test_experiments_api.py). A student follows the teacher's selection."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.page_helpers import api, open_page, query, upload_photo
from tests.browser.test_classroom_page import new_page  # noqa: F401 — the fixture, shared

pytestmark = pytest.mark.browser
CARD = ".xp-ablate-body"


def photo_on(page, photos: Path, model: str = "lenet5") -> str:
    open_page(page, f"/?model={model}")
    return upload_photo(page, photos / "cat.jpg")


def wait_channels(page, channels: str) -> None:
    page.wait_for_function("c => new URLSearchParams(location.search).get('channels') === c", arg=channels)


def ready_for(page, layer: str, channels: str, mode: str = "zero") -> None:
    """The card shows the answer for exactly this experiment."""
    page.wait_for_function("([l, c, m]) => { const h = document.querySelector('.xp-ablate-body');"
                           " if (!h || h.dataset.state !== 'ready') return false; const p = JSON.parse(h.dataset.for)[2];"
                           " return p.layer === l && p.channels === c && p.mode === m; }", arg=[layer, channels, mode])


def shown_matches_api(page, image: str, layer: str, channels: str, extra: str = "") -> dict:
    answer = api(page, f"/api/models/lenet5/images/{image}/ablation.json?layer={layer}&channels={channels}&weights=trained{extra}")
    bars = page.eval_on_selector_all(f"{CARD} .xp-pane:nth-child(2) .bar-row", "rows => rows.map(r => [Number(r.dataset.index), Number(r.dataset.probability)])")
    assert bars == [[r["index"], r["probability"]] for r in answer["predictions"]]
    old = page.eval_on_selector_all(f"{CARD} .xp-pane:nth-child(1) .bar-row", "rows => rows.map(r => Number(r.dataset.index))")
    assert old == [r["index"] for r in answer["baseline"]]
    changes = page.eval_on_selector_all(f"{CARD} .xp-changes tr[data-index]", "rows => rows.map(r => [Number(r.dataset.index), Number(r.dataset.change)])")
    assert changes == [[c["index"], c["change"]] for c in answer["changes"]]
    chart = page.eval_on_selector_all(f"{CARD} .xp-lbar", "bars => bars.map(b => [b.dataset.layer, Number(b.dataset.value)])")
    assert chart == [[r["name"], r["relative_l2"]] for r in answer["layers"]]
    assert page.get_attribute(f"{CARD} .xp-cam-after", "src") == answer["gradcam"]["png"]
    page.wait_for_function("s => [...document.querySelectorAll(s)].every(i => i.complete && i.naturalWidth > 0)", arg=f"{CARD} .xp-cam")
    return answer


def test_layers_view_click_and_shift_click_feature_maps(page, photos, shots) -> None:
    image = photo_on(page, photos)
    page.goto(f"/?model=lenet5&image={image}&view=layers&layer=features.3")
    page.wait_for_selector(".channel-grid[data-open-ms] figure.tile[data-channel='2']")
    page.click(".xp-ablate-toggle")
    page.wait_for_function("() => new URLSearchParams(location.search).get('ablate') === '1'")
    page.click("figure.tile[data-channel='2']")
    wait_channels(page, "2")
    page.click("figure.tile[data-channel='5']", modifiers=["Shift"])
    wait_channels(page, "2,5")
    assert query(page).get("channel") is None, "while picking, a click does not open the channel"
    ready_for(page, "features.3", "2,5")
    shown_matches_api(page, image, "features.3", "2,5")
    marked = page.eval_on_selector_all("figure.tile.is-ablated", "ts => ts.map(t => Number(t.dataset.channel)).sort((a, b) => a - b)")
    assert marked == [2, 5]
    # everything but the top 2 by mean activation, replaced by the mean
    page.fill(f"{CARD} .xp-k", "2")
    page.dispatch_event(f"{CARD} .xp-k", "change")
    page.wait_for_function("() => new URLSearchParams(location.search).get('k') === '2'")
    page.click(f"{CARD} .xp-all-but-top")
    page.wait_for_function("() => new URLSearchParams(location.search).get('invert') === '1'")
    stats = api(page, f"/api/models/lenet5/images/{image}/layers/features.3/stats.json")
    top2 = sorted(range(16), key=lambda c: -stats["mean"][c])[:2]
    assert sorted(int(c) for c in query(page)["channels"].split(",")) == sorted(top2)
    page.wait_for_function("() => document.querySelectorAll('figure.tile.is-ablated').length === 14")
    page.select_option(f"{CARD} .xp-mode", "mean")
    ready_for(page, "features.3", query(page)["channels"], "mean")
    shown_matches_api(page, image, "features.3", query(page)["channels"], "&invert=true&mode=mean")
    assert "14 of 16 channels of features.3 replaced by their mean" in page.inner_text(f"{CARD} .xp-summary")
    page.screenshot(path=str(shots / "ablation-layers-1280.png"), full_page=True)
    # "Done" ends picking: a click opens the channel again
    page.click(".xp-ablate-toggle")
    page.wait_for_function("() => new URLSearchParams(location.search).get('ablate') === null")
    page.click("figure.tile[data-channel='7']")
    page.wait_for_function("() => new URLSearchParams(location.search).get('channel') === '7'")


def test_network_view_tiles_pick_channels_of_their_layer(page, photos, shots) -> None:
    image = photo_on(page, photos)
    page.goto(f"/?model=lenet5&image={image}&view=network&ablate=1")
    page.wait_for_selector(".net[data-ready='1'] .net-tile[data-layer='features.3']")
    tiles = page.eval_on_selector_all(".net-tile[data-layer='features.3']", "ts => ts.map(t => t.dataset.channel)")
    first, second = tiles[0], tiles[1]
    page.click(f".net-tile[data-layer='features.3'][data-channel='{first}']")
    page.wait_for_function("() => new URLSearchParams(location.search).get('layer') === 'features.3'")
    wait_channels(page, first)
    assert query(page).get("open") is None, "while picking, a click does not open the unit"
    page.click(f".net-tile[data-layer='features.3'][data-channel='{second}']", modifiers=["Shift"])
    picked = ",".join(str(c) for c in sorted([int(first), int(second)]))
    wait_channels(page, picked)
    ready_for(page, "features.3", picked)
    shown_matches_api(page, image, "features.3", picked)
    page.wait_for_function("n => document.querySelectorAll('.net-tile.is-ablated').length === n", arg=2)
    # a tile of another layer starts a new selection there
    other = page.get_attribute(".net-tile[data-layer='features.0']", "data-channel")
    page.click(f".net-tile[data-layer='features.0'][data-channel='{other}']", modifiers=["Shift"])
    page.wait_for_function("() => new URLSearchParams(location.search).get('layer') === 'features.0'")
    wait_channels(page, other)
    ready_for(page, "features.0", other)
    page.screenshot(path=str(shots / "ablation-network-1280.png"), full_page=True)


def test_step_through_view_card_from_a_link(page, photos, shots) -> None:
    image = photo_on(page, photos)
    page.goto(f"/?model=lenet5&image={image}&view=step-through&layer=features.0&ablate=1&channels=1,3&mode=scale&factor=1.5")
    ready_for(page, "features.0", "1,3", "scale")
    shown_matches_api(page, image, "features.0", "1,3", "&mode=scale&factor=1.5")
    assert page.input_value(f"{CARD} .xp-factor") == "1.5"
    page.click(f"{CARD} .xp-chip[data-channel='4']")
    wait_channels(page, "4")
    ready_for(page, "features.0", "4", "scale")
    page.screenshot(path=str(shots / "ablation-step-through-1280.png"), full_page=True)


def test_a_student_follows_the_teachers_ablation_in_the_layers_view(new_page, photos) -> None:  # noqa: F811
    teacher = new_page()
    photo_on(teacher, photos)
    teacher.click("text=Start class session")
    teacher.wait_for_selector(".class-code")
    student = new_page()
    student.goto(teacher.inner_text(".class-url").strip())
    student.wait_for_selector("text=Following the teacher.")
    teacher.click(".view-tabs button:has-text('Layers')")
    teacher.wait_for_selector(".channel-grid[data-open-ms] figure.tile[data-channel='3']")
    teacher.click(".xp-ablate-toggle")
    teacher.click("figure.tile[data-channel='3']")
    teacher.click("figure.tile[data-channel='1']", modifiers=["Shift"])
    wait_channels(teacher, "1,3")
    layer = query(teacher)["layer"] if "layer" in query(teacher) else None
    teacher.wait_for_selector(f"{CARD}[data-state='ready']")
    for key in ("view", "ablate", "channels"):
        student.wait_for_function("([k, v]) => new URLSearchParams(location.search).get(k) === v", arg=[key, query(teacher)[key]])
    student.wait_for_function("k => { const h = document.querySelector('.xp-ablate-body'); return h && h.dataset.state === 'ready' && h.dataset.for === k; }",
                              arg=teacher.get_attribute(CARD, "data-for"))
    student.wait_for_function("() => document.querySelectorAll('figure.tile.is-ablated').length === 2")
    assert layer is None or query(student).get("layer") == layer
