"""Every text is readable in every view (issue 20 §2): in projector mode every visible text node and every
number drawn on a canvas is at least 16 CSS px, at 1280×720 and 1024×640, with and without the class wall
open; in normal mode at 1024×640 (a student's laptop) at least 12 px. Nothing is cut off with an ellipsis.

One page per size and mode; the views are switched through the page's URL state (history + popstate, as
back/forward does), so the model and images stay loaded. Sizes are read by tests/browser/fonts.py (DOM text
by computed style, canvas text by wrapping fillText, scaled by the canvas's displayed size and transform).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.browser.fonts import FONT_PROBE, cut_texts, describe, small_texts
from tests.browser.test_train_page import two_runs  # noqa: F401 — the fixture: two finished tiny training runs

pytestmark = pytest.mark.browser


class ViewCase(NamedTuple):
    name: str       # for messages and screenshot names
    model: str      # 'lenet5' or 'efficientnet_lite0' (the image is uploaded for it)
    query: str      # the view's URL keys ({plain} / {augmented}: the ids of the two_runs fixture's runs)
    ready: str      # a JS expression true once the view has drawn everything
    fold: str = ""  # a selector whose whole box must be above the fold in projector mode (wall closed)
    wait_s: int = 120  # how long it may take to become ready


def STEP_THROUGH_AT(cell: str) -> str:  # noqa: N802 (reads as a constant in the table)
    return ("(() => { const c = document.querySelector('#step-through-canvas'); return c && c.dataset.ready === '1'"
            f" && c.dataset.cell === '{cell}' && c.dataset.fitWidth; }})()")


# Add a view here (one line) and it is measured at every size, mode and wall state.
VIEW_CASES = [
    ViewCase("overview", "lenet5", "view=overview", "document.querySelector('table.arch-table[data-model] tbody tr')"),
    ViewCase("network", "lenet5", "view=network", "document.querySelector(\".net[data-ready='1']\")"),
    ViewCase("network-tile", "lenet5", "view=network&open=unit&layer=features.3&channel=2",
             STEP_THROUGH_AT("0,0")),
    ViewCase("network-class", "lenet5", "view=network&open=unit&layer=@softmax",
             "document.querySelector('.step-through-softmax-table') && document.querySelector('.flatten-linear table')"),
    ViewCase("layers", "lenet5", "view=layers&layer=features.3",
             "document.querySelector(\".channel-grid[data-open-ms] canvas\") && document.querySelector('.arch-strip button')"),
    ViewCase("channel-detail", "lenet5", "view=layers&layer=features.3&channel=11",
             "(() => { const i = document.querySelector('.detail-map'); return i && i.naturalWidth > 0 && document.querySelector('.value-readout'); })()"),
    ViewCase("saliency", "lenet5", "view=saliency",
             "document.querySelector('.sal-top:not(.is-loading) .sal-card') && document.querySelector('.gc-maps canvas')"),
    ViewCase("saliency-efficientnet", "efficientnet_lite0", "view=saliency",
             "[...document.querySelectorAll('.sal-top:not(.is-loading) .sal-card')].some((c) => c.textContent.includes('zebra'))"
             " && document.querySelector('.gc-maps canvas')"),
    ViewCase("step-through", "lenet5", "view=step-through&layer=features.0&pos=14,9", STEP_THROUGH_AT("14,9"),
             fold="#step-through-canvas, .step-through-geometry"),
    ViewCase("step-through-efficientnet", "efficientnet_lite0", "view=step-through&pos=20,22", STEP_THROUGH_AT("20,22"),
             fold="#step-through-canvas, .step-through-geometry"),
    ViewCase("sandbox", "lenet5", "view=sandbox",
             "(() => { const c = document.querySelector('#sandbox-canvas'); return c && c.dataset.outputShape && c.dataset.fitWidth; })()"),
    ViewCase("live", "lenet5", "view=live", "document.querySelector('.live-atlas-body canvas, .live-atlas-body img')"),
    # issue 22: each experiment, and switching channels off inside the Layers view
    ViewCase("experiments-ablation", "lenet5", "view=experiments&xp=ablation&layer=features.3&channels=1,4&mode=scale&factor=1.5",
             "document.querySelector(\".xp-body[data-xp='ablation'][data-state='ready']\") && document.querySelector('.xp-cam-after').naturalWidth > 0"),
    ViewCase("experiments-probe", "lenet5", "view=experiments&xp=probe&py=8&px=8",
             "document.querySelector(\".xp-body[data-xp='probe'] .xp-class option\") && document.querySelector('.xp-watched').textContent"),
    ViewCase("experiments-adversarial", "lenet5", "view=experiments&xp=adversarial&attack=pgd&epsilon=8&steps=3&step_size=2",
             "document.querySelector(\".xp-body[data-xp='adversarial'][data-state='ready']\") && document.querySelector('.xp-min-flip[data-epsilon]')"),
    ViewCase("experiments-compare", "lenet5", "view=experiments&xp=compare&compare_weights=untrained&compare_layer=features.3",
             "document.querySelector(\".xp-body[data-xp='compare'][data-state='ready']\") && document.querySelectorAll('.xp-step-lines[data-value]').length === 2"),
    ViewCase("network-ablation", "lenet5", "view=network&ablate=1&layer=features.0&channels=1,3",
             "document.querySelector(\".xp-ablate-body[data-state='ready']\") && document.querySelector(\".net[data-ready='1'] .net-tile.is-ablated\")"),
    ViewCase("step-through-ablation", "lenet5", "view=step-through&layer=features.0&ablate=1&channels=2&mode=mean&pos=3,3",
             "document.querySelector(\".xp-ablate-body[data-state='ready']\")" + " && " + STEP_THROUGH_AT("3,3")),
    ViewCase("layers-ablation", "lenet5", "view=layers&layer=features.3&ablate=1&channels=2,5",
             "document.querySelector(\".xp-ablate-body[data-state='ready']\") && document.querySelector('.channel-grid[data-open-ms] figure.tile.is-ablated')"),
    # issue 23's "Can we trust this map?" panel, run to the end (the server keeps the result: one run for all modes)
    ViewCase("saliency-trust", "lenet5", "view=saliency&trust=1", "document.querySelector(\".trust-card[data-state='done']\")", wait_s=600),
    # issue 24: a run with a second one overlaid on its charts, "What am I looking at?" comparing them
    ViewCase("train-overlay", "lenet5", "view=train&run={plain}&overlay={augmented}",
             "document.querySelector('.train-legend-overlay') && document.querySelectorAll('.train-top5 li').length === 5"
             " && (document.querySelector('.explain-panel[data-view=train]').open = true)"),
]

MODES = [
    # (id, viewport, projector, wall open, smallest CSS px)
    ("projector-1280x720", (1280, 720), True, False, 16),
    ("projector-1024x640", (1024, 640), True, False, 16),
    ("projector-wall-1280x720", (1280, 720), True, True, 16),
    ("projector-wall-1024x640", (1024, 640), True, True, 16),
    ("normal-1024x640", (1024, 640), False, False, 12),
]


def upload(page, model: str, photos: Path) -> str:
    if model == "efficientnet_lite0":
        body, mime = (photos / "zebra.jpg").read_bytes(), "image/jpeg"
    else:
        body, mime = page.request.get("/api/samples/mnist-test-3.png").body(), "image/png"
    response = page.request.post("/api/images", multipart={"file": {"name": "image", "mimeType": mime, "buffer": body}})
    assert response.ok, response.text()
    return response.json()["image_id"]


def open_wall(page) -> None:
    """Start a class session (as the teacher) and show its wall, before projector mode hides the sidebar."""
    page.click("text=Start class session")
    page.click("button:has-text('Show wall')")
    page.wait_for_selector("#class-wall:not([hidden]) .wall-head")


def show(page, url: str, ready: str, wait_s: int = 120) -> None:
    """Switch the page to `url` as back/forward does (the state store listens to popstate), then wait."""
    page.evaluate("url => { history.pushState(null, '', url); dispatchEvent(new PopStateEvent('popstate')); }", url)
    page.wait_for_function(f"() => Boolean({ready})", timeout=wait_s * 1000)
    # let the fitted canvases take their size and redraw (two frames after the last layout change)
    page.evaluate("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m[0])
def test_every_text_is_readable(page, mode, photos: Path, shots: Path, two_runs) -> None:  # noqa: F811
    name, (width, height), projector, wall, minimum = mode
    page.set_viewport_size({"width": width, "height": height})
    page.add_init_script(FONT_PROBE)
    images = {model: upload(page, model, photos) for model in {case.model for case in VIEW_CASES}}
    runs = {"plain": two_runs[0]["id"], "augmented": two_runs[1]["id"]}
    first = VIEW_CASES[0]
    page.goto(f"/?model={first.model}&image={images[first.model]}&{first.query}")
    page.wait_for_function(f"() => Boolean({first.ready})")
    if wall:
        open_wall(page)
    if projector:
        page.locator("body").press("p")
        page.wait_for_function("() => document.documentElement.classList.contains('is-projector')")
    failures = []
    for case in VIEW_CASES:
        keep = "&present=1" if projector else ""
        session = page.evaluate("new URLSearchParams(location.search).get('session') || ''")
        keep += f"&session={session}" if session else ""
        try:
            show(page, f"/?model={case.model}&image={images[case.model]}&{case.query.format(**runs)}{keep}", case.ready,
                 case.wait_s)
        except PlaywrightTimeout:
            failures.append(f"{case.name}: never became ready ({case.ready})")
            continue
        page.screenshot(path=str(shots / f"fonts-{name}-{case.name}.png"))
        small = small_texts(page, minimum)
        cut = cut_texts(page)
        if small:
            failures.append(f"{case.name}: {len(small)} texts under {minimum} px\n{describe(small)}")
        if cut:
            failures.append(f"{case.name}: cut off: {cut[:5]}")
        if case.fold and projector and not wall:
            below = page.eval_on_selector_all(
                case.fold, "(els, h) => els.filter((e) => e.getBoundingClientRect().bottom > h).map((e) => e.className || e.id)",
                height)
            if below:
                failures.append(f"{case.name}: below the fold: {below}")
    assert not failures, "\n\n".join(failures)
