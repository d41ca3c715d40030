"""The Train view in the browser (issue 24): Start → curves → Pause → scrubber → overlay a second run → open a
checkpoint in Layers, the page's numbers checked against the runs' own API answers; screenshots at 1280×720 and
1024×640, normal and projector mode, with the text floors measured (12 px, 16 px in projector mode) and the
controls checked for overlap. Runs are tiny (a few hundred images, 1–4 epochs)."""

from __future__ import annotations

import pytest

from tests.browser.page_helpers import api, open_page, query
from tests.browser.test_classroom_page import new_page  # noqa: F401 — the fixture, shared
from tests.harness import wait_until

pytestmark = pytest.mark.browser
SMALL = {"width": 1024, "height": 640}
SMALLEST_TEXT = """() => Math.min(...[...document.querySelectorAll('.train-card *, .explain-panel[data-view=train] *')]
    .filter(e => e.offsetParent !== null && [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim()))
    .map(e => parseFloat(getComputedStyle(e).fontSize)))"""
# pairs of the run's controls, charts and pictures whose boxes overlap (none may)
OVERLAPS = """() => { const els = [...document.querySelectorAll(
    '.train-card button, .train-card select, .train-card input, .train-card canvas, .train-card label, .train-card ol,'
    + ' .train-scrub-label, .train-legend-row, .train-status, .train-speed')].filter(e => e.offsetParent);
  const out = [];
  for (let i = 0; i < els.length; i += 1) for (let j = i + 1; j < els.length; j += 1) {
    if (els[i].contains(els[j]) || els[j].contains(els[i])) continue;
    const a = els[i].getBoundingClientRect(), b = els[j].getBoundingClientRect();
    if (a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1)
      out.push(`${els[i].className || els[i].name} × ${els[j].className || els[j].name}`);
  }
  return out; }"""
# the page has drawn a run with this one overlaid / with its scrubber on this checkpoint (until the view has
# mounted, neither element is there)
OVERLAID = "id => (document.querySelector('.train-legend') || {dataset: {}}).dataset.overlay === id"
SCRUBBED_TO = "w => (document.querySelector('.train-scrub-label') || {dataset: {}}).dataset.weights === w"
# the overfitting demo in small: the same tiny data without and with augmentation plus dropout
PLAIN = {"epochs": 2, "train_size": 300, "batch_size": 32, "augment": False, "dropout": 0.0, "name": "without augmentation"}
AUGMENTED = {**PLAIN, "augment": True, "dropout": 0.5, "name": "with augmentation"}


def finished_run(request, body: dict) -> dict:
    """Train a run through the API (`request`: a Playwright APIRequestContext) and wait until it is done; a
    run still ending elsewhere (429: one at a time) is waited out. Returns the run as GET answers it."""
    started: list[dict] = []

    def start() -> bool:
        response = request.post("/api/training/runs", data=body)
        assert response.ok or response.status == 429, response.text()
        if response.ok:
            started.append(response.json())
        return response.ok

    wait_until(start, timeout=120, what="a free training slot", poll_s=0.5)
    run_id = started[0]["id"]
    wait_until(lambda: request.get(f"/api/training/runs/{run_id}").json()["state"] not in ("queued", "running"),
               timeout=300, what=f"run {run_id} to finish", poll_s=0.2)
    run = request.get(f"/api/training/runs/{run_id}").json()
    assert run["state"] == "done", run
    return run


def start_run(page, epochs: int, train_size: int, augment: bool = True) -> str:
    page.goto("/?view=train")
    page.wait_for_function("() => (document.querySelector('.train-form [name=epochs]') || {}).value")  # recipes filled
    page.fill(".train-form [name=epochs]", str(epochs))
    page.fill(".train-form [name=train_size]", str(train_size))
    page.fill(".train-form [name=batch_size]", "32")
    page.set_checked(".train-form [name=augment]", augment)
    page.click(".train-start")
    page.wait_for_function("() => new URLSearchParams(location.search).get('run')")
    return query(page)["run"]


def stop(page, run_id: str) -> None:
    page.request.post(f"/api/training/runs/{run_id}/stop")


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def checkpoint_words(checkpoint: dict) -> str:
    """What the scrubber says for a checkpoint: the initial weights (epoch-0, where runs have it) are untrained."""
    if checkpoint["epoch"] == 0:
        return "untrained, epoch 0"
    return f"{checkpoint['weights']} (step {checkpoint['step']:,})"


def test_start_curves_pause_scrub_overlay_and_open_a_checkpoint_in_layers(page, shots) -> None:
    other = finished_run(page.request, AUGMENTED)  # the run to overlay, finished before this one starts
    run_id = start_run(page, epochs=4, train_size=1000, augment=False)
    # the form's menus are what the server can train here
    choices = api(page, "/api/training/runs")["choices"]
    for name, key in (("architecture", "architectures"), ("dataset", "datasets")):
        shown = page.eval_on_selector_all(f".train-form [name={name}] option", "os => os.map(o => o.value)")
        assert shown == [c["id"] for c in choices[key]], name
    try:
        # curves: streamed points arrive and the speed readout fills
        page.wait_for_function("() => document.querySelector('.train-speed').textContent.includes('images/s')")
        wait_until(lambda: any(c["epoch"] >= 1 for c in api(page, f"/api/training/runs/{run_id}")["checkpoints"]),
                   timeout=300, what="the first epoch's checkpoint", poll_s=0.1)
        page.click(".train-pause")
        page.wait_for_selector(".train-status[data-state='paused']")
        assert page.inner_text(".train-pause") == "Resume"
        run = api(page, f"/api/training/runs/{run_id}")
        assert run["state"] == "paused" and run["checkpoints"][0]["weights"] in ("epoch-0", "epoch-1")
        # the page's top-5 for the probe is the run's latest streamed answer
        shown = page.eval_on_selector_all(".train-top5 li", "items => items.map(li => li.textContent)")
        assert shown == [f"{row['label']} {100 * row['probability']:.1f}%" for row in run["latest"]["top5"]]
        # the scrubber goes back to the first checkpoint (the untrained network where the run has epoch-0); its
        # label and the probe's top-5 follow, as the run recorded them at that checkpoint
        first = run["snapshots"][0]
        page.eval_on_selector(".train-scrub", "s => { s.value = '0'; s.dispatchEvent(new Event('input')); }")
        page.wait_for_function(SCRUBBED_TO, arg=first["weights"])
        assert page.inner_text(".train-scrub-label") == checkpoint_words(first)
        assert query(page)["ckpt"] == "0"
        shown = page.eval_on_selector_all(".train-top5 li", "items => items.map(li => li.textContent)")
        assert shown == [f"{row['label']} {100 * row['probability']:.1f}%" for row in first["top5"]]
        # overlay the finished run: the URL names it, the legend labels both, the explanation compares them with
        # their own numbers at the last epoch both reached
        assert page.get_attribute(".train-loss", "data-axis") == "step"
        alone = page.eval_on_selector(".train-loss", "c => c.toDataURL()")
        page.select_option(".train-overlay", other["id"])
        page.wait_for_function("id => new URLSearchParams(location.search).get('overlay') === id", arg=other["id"])
        page.wait_for_function(OVERLAID, arg=other["id"])
        assert page.inner_text(".train-legend-overlay .train-legend-name") == AUGMENTED["name"]
        for chart in (".train-loss", ".train-accuracy", ".train-lr"):  # both runs drawn, against the epoch
            assert page.get_attribute(chart, "data-runs") == f"{run_id} {other['id']}"
            assert page.get_attribute(chart, "data-axis") == "epoch"
        assert page.eval_on_selector(".train-loss", "c => c.toDataURL()") != alone
        mine = [row for row in api(page, f"/api/training/runs/{run_id}")["history"] if row["epoch"] >= 1]
        epoch = min(mine[-1]["epoch"], other["history"][-1]["epoch"])
        a = next(row for row in mine if row["epoch"] == epoch)
        b = next(row for row in other["history"] if row["epoch"] == epoch)
        page.click(".explain-panel[data-view=train] summary")
        expected = (f"“{run['name']}”: training {pct(a['accuracy'])}, held-out {pct(a['val_accuracy'])}, a gap of "
                    f"{100 * (a['accuracy'] - a['val_accuracy']):.1f} points. “{other['name']}”: training "
                    f"{pct(b['accuracy'])}, held-out {pct(b['val_accuracy'])}, a gap of "
                    f"{100 * (b['accuracy'] - b['val_accuracy']):.1f} points.")
        page.wait_for_function("t => document.querySelector('.explain-panel[data-view=train]').textContent.includes(t)",
                               arg=expected)
        differs = page.evaluate("() => [...document.querySelectorAll('.explain-panel[data-view=train] dt')]"
                                ".find(dt => dt.textContent === 'What differs').nextElementSibling.textContent")
        assert "augmentation: none in" in differs and "dropout p: 0 in" in differs
        page.screenshot(path=str(shots / "train-overlay-paused-1280.png"), full_page=True)
        # a refresh (or a shared link) brings back both runs and the scrubber position
        page.reload()
        page.wait_for_function(OVERLAID, arg=other["id"])
        page.wait_for_function(SCRUBBED_TO, arg=first["weights"])
        # open the scrubbed checkpoint in Layers: the run is a model, the checkpoint its weights
        page.click(".train-open")
        page.wait_for_function("() => new URLSearchParams(location.search).get('view') === 'layers'")
        state = query(page)
        assert state["model"] == f"run-{run_id}" and state["weights"] == first["weights"]
        page.wait_for_selector(".view-layers canvas")
        detail = api(page, f"/api/models/run-{run_id}?weights={first['weights']}")
        assert detail["weights_used"] == first["weights"] and detail["family"] == "run"
        # back to the Train view: the run re-attaches from the URL, still paused, the overlay still drawn
        page.go_back()
        page.wait_for_selector(".train-status[data-state='paused']")
        page.wait_for_function(OVERLAID, arg=other["id"])
    finally:
        stop(page, run_id)


@pytest.fixture(scope="module")
def two_runs(browser, live_server: str) -> tuple[dict, dict]:
    """Two finished tiny runs, without and with augmentation plus dropout, to overlay."""
    context = browser.new_context(base_url=live_server)
    try:
        return finished_run(context.request, PLAIN), finished_run(context.request, AUGMENTED)
    finally:
        context.close()


@pytest.mark.parametrize("projector", [False, True])
def test_screens_and_text_floors(new_page, shots, two_runs, projector) -> None:  # noqa: F811
    """One run with another overlaid, the explanation open: every text at least 12 px (16 in projector mode),
    no control, chart or picture over another, nothing sticking out sideways, at 1024×640 and 1280×720."""
    plain, augmented = two_runs
    for viewport in (SMALL, {"width": 1280, "height": 720}):
        page = new_page(viewport)
        page.goto(f"/?view=train&run={plain['id']}&overlay={augmented['id']}{'&present=1' if projector else ''}")
        page.wait_for_function(OVERLAID, arg=augmented["id"])
        page.wait_for_function("() => document.querySelectorAll('.train-top5 li').length === 5")
        page.click(".explain-panel[data-view=train] summary")
        page.wait_for_function("() => document.querySelector('.explain-panel[data-view=train]').textContent.includes('What it did')")
        smallest = page.evaluate(SMALLEST_TEXT)
        assert smallest >= (16 if projector else 12), (viewport, projector, smallest)
        assert page.evaluate(OVERLAPS) == [], viewport
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), viewport
        # the charts are drawn at their displayed size, one under the other where the column is narrow
        charts = page.eval_on_selector_all(".train-chart", "cs => cs.map(c => [c.width, Math.round(c.getBoundingClientRect().width * devicePixelRatio)])")
        assert all(drawn == shown for drawn, shown in charts), charts
        page.screenshot(path=str(shots / f"train-overlay-{viewport['width']}{'-projector' if projector else ''}.png"),
                        full_page=True)


def test_students_follow_the_teachers_run(new_page, shots, two_runs) -> None:  # noqa: F811
    """The class session carries the Train view's URL keys (run, scrubber position, overlaid run): a student's
    page attaches to the teacher's run (it starts no run of its own), moves its scrubber with the teacher's and
    overlays the run the teacher overlays."""
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
        first = api(teacher, f"/api/training/runs/{run_id}")["checkpoints"][0]["weights"]
        student.wait_for_function(SCRUBBED_TO, arg=first)
        assert student.inner_text(".train-scrub-label") == teacher.inner_text(".train-scrub-label")
        assert student.inner_text(".train-top5") == teacher.inner_text(".train-top5")
        teacher.select_option(".train-overlay", two_runs[0]["id"])
        student.wait_for_function(OVERLAID, arg=two_runs[0]["id"])
        assert student.inner_text(".train-legend") == teacher.inner_text(".train-legend")
        student.screenshot(path=str(shots / "train-student-following-1280.png"))
    finally:
        stop(teacher, run_id)
