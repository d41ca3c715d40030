"""The Train view in the browser (issue 24): Start → curves → Pause → scrubber → open a checkpoint in Layers,
the page's numbers checked against the run's own API answer; screenshots at 1280×720 and 1024×640, normal and
projector mode, with the text floors measured (12 px, 16 px in projector mode)."""

from __future__ import annotations

import pytest

from tests.browser.page_helpers import api, open_page, query
from tests.browser.test_classroom_page import new_page  # noqa: F401 — the fixture, shared

pytestmark = pytest.mark.browser
SMALL = {"width": 1024, "height": 640}
SMALLEST_TEXT = """() => Math.min(...[...document.querySelectorAll('.train-card *, .explain-panel[data-view=train] *')]
    .filter(e => e.offsetParent !== null && [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim()))
    .map(e => parseFloat(getComputedStyle(e).fontSize)))"""


def start_run(page, epochs: int, train_size: int) -> str:
    page.goto("/?view=train")
    page.wait_for_function("() => (document.querySelector('.train-form [name=epochs]') || {}).value")  # recipes filled
    page.fill(".train-form [name=epochs]", str(epochs))
    page.fill(".train-form [name=train_size]", str(train_size))
    page.fill(".train-form [name=batch_size]", "32")
    page.click(".train-start")
    page.wait_for_function("() => new URLSearchParams(location.search).get('run')")
    return query(page)["run"]


def stop(page, run_id: str) -> None:
    page.request.post(f"/api/training/runs/{run_id}/stop")


def test_start_curves_pause_scrub_and_open_a_checkpoint_in_layers(page, shots) -> None:
    run_id = start_run(page, epochs=8, train_size=2000)
    try:
        # curves: streamed points arrive and the speed readout fills
        page.wait_for_function("() => document.querySelector('.train-speed').textContent.includes('images/s')")
        page.wait_for_function("() => !document.querySelector('.train-scrub').disabled")  # epoch-0: the start
        page.click(".train-pause")
        page.wait_for_selector(".train-status[data-state='paused']")
        assert page.inner_text(".train-pause") == "Resume"
        run = api(page, f"/api/training/runs/{run_id}")
        assert run["state"] == "paused" and run["checkpoints"][0]["weights"] == "epoch-0"
        # the page's top-5 for the probe is the run's latest streamed answer
        shown = page.eval_on_selector_all(".train-top5 li", "items => items.map(li => li.textContent)")
        latest = run["latest"]["top5"]
        assert shown == [f"{row['label']} {100 * row['probability']:.1f}%" for row in latest]
        page.screenshot(path=str(shots / "train-paused-1280.png"))
        # the scrubber goes back to the first checkpoint, the untrained network; its filters and label follow
        page.eval_on_selector(".train-scrub", "s => { s.value = '0'; s.dispatchEvent(new Event('input')); }")
        page.wait_for_function("() => document.querySelector('.train-scrub-label').textContent.startsWith('epoch-0')")
        assert query(page)["ckpt"] == "0"
        page.click(".train-open")
        page.wait_for_function("() => new URLSearchParams(location.search).get('view') === 'layers'")
        state = query(page)
        assert state["model"] == f"run-{run_id}" and state["weights"] == "epoch-0"
        page.wait_for_selector(".view-layers canvas")
        detail = api(page, f"/api/models/run-{run_id}?weights=epoch-0")
        assert detail["weights_used"] == "epoch-0" and detail["family"] == "run"
        # back to the Train view: the run re-attaches from the URL (as after a refresh), still paused
        page.go_back()
        page.wait_for_selector(".train-status[data-state='paused']")
    finally:
        stop(page, run_id)


@pytest.mark.parametrize("projector", [False, True])
def test_screens_and_text_floors(new_page, shots, projector) -> None:  # noqa: F811
    for viewport in (SMALL, {"width": 1280, "height": 720}):
        page = new_page(viewport)
        run_id = start_run(page, epochs=3, train_size=500)
        try:
            if projector:
                page.goto(f"/?view=train&run={run_id}&present=1")
            page.wait_for_selector(".train-status[data-state='done']", timeout=120_000)
            page.wait_for_function("() => document.querySelectorAll('.train-top5 li').length === 5")
            smallest = page.evaluate(SMALLEST_TEXT)
            page.evaluate("() => window.scrollTo(0, 0)")  # Start's click scrolled the form into view
            assert smallest >= (16 if projector else 12), (viewport, projector, smallest)
            page.screenshot(path=str(shots / f"train-{viewport['width']}{'-projector' if projector else ''}.png"))
        finally:
            stop(page, run_id)


def test_students_follow_the_teachers_run(new_page, shots) -> None:  # noqa: F811
    """The class session carries the Train view's URL keys (run, scrubber position): a student's page attaches
    to the teacher's run (it starts no run of its own) and moves its scrubber with the teacher's."""
    teacher = new_page()
    open_page(teacher, "/?model=lenet5")
    teacher.click("text=Start class session")
    teacher.wait_for_selector(".class-code")
    join_url = teacher.inner_text(".class-url").strip()
    student = new_page()
    student.goto(join_url)
    student.wait_for_selector("text=Following the teacher.")
    before = len(api(teacher, "/api/training/runs")["runs"])
    run_id = start_run(teacher, epochs=3, train_size=300)
    try:
        student.wait_for_function("id => new URLSearchParams(location.search).get('run') === id", arg=run_id)
        student.wait_for_selector(".train-status[data-state='done']", timeout=120_000)
        assert len(api(student, "/api/training/runs")["runs"]) == before + 1  # the teacher's, no copy
        teacher.wait_for_selector(".train-status[data-state='done']")
        teacher.eval_on_selector(".train-scrub", "s => { s.value = '0'; s.dispatchEvent(new Event('input')); }")
        student.wait_for_function("() => document.querySelector('.train-scrub-label').textContent.startsWith('epoch-0')")
        assert student.inner_text(".train-top5") == teacher.inner_text(".train-top5")
        student.screenshot(path=str(shots / "train-student-following-1280.png"))
    finally:
        stop(teacher, run_id)
