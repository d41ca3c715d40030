"""A class in the browser: a teacher page and three student pages (separate browser contexts). Students
join by the QR code's URL, follow the teacher, explore and snap back; they send images to the wall, whose
predictions match the API; the teacher picks from the wall, clears it and ends the session."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from tests.browser.conftest import PROJECTOR, ConsoleWatch
from tests.browser.page_helpers import api, open_page, query

pytestmark = pytest.mark.browser

HOSTILE_NAME = '<img src=x onerror="document.title=1">'
SHARED_KEYS = ("model", "weights", "view", "image", "layer")


@pytest.fixture
def new_page(browser, live_server: str) -> Iterator[object]:
    """Pages in their own browser contexts (a teacher, students); console errors fail the test."""
    contexts, watches = [], []

    def make(viewport: dict | None = None):
        context = browser.new_context(viewport=viewport or PROJECTOR, base_url=live_server)
        context.set_default_timeout(60_000)
        page = context.new_page()
        watch = ConsoleWatch()
        page.on("console", lambda m: watch.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: watch.errors.append(f"page error: {e}"))
        contexts.append(context)
        watches.append(watch)
        return page

    yield make
    for context in contexts:
        context.close()
    bad = [error for watch in watches for error in watch.unexpected()]
    assert not bad, "pages reported errors:\n" + "\n".join(bad)


def shared(page) -> dict[str, str]:
    state = query(page)
    return {key: state[key] for key in SHARED_KEYS if key in state}


def wait_same_view(student, teacher) -> None:
    """Until the student's URL state shows the teacher's view."""
    expected = shared(teacher)
    student.wait_for_function(
        """expected => {
            const q = new URLSearchParams(location.search);
            return Object.entries(expected).every(([k, v]) => q.get(k) === v);
        }""",
        arg=expected,
    )


def pick_sample(page, index: int) -> str:
    before = query(page).get("image")
    page.locator(".gallery .sample").nth(index).click()
    page.wait_for_function("before => { const i = new URLSearchParams(location.search).get('image');"
                           " return i && i !== before; }", arg=before)
    return query(page)["image"]


def test_a_class_follows_explores_snaps_back_and_fills_the_wall(new_page, shots) -> None:
    zxingcpp = pytest.importorskip("zxingcpp")
    from PIL import Image

    teacher = new_page()
    open_page(teacher, "/?model=lenet5")
    teacher.click("text=Start class session")
    teacher.wait_for_selector(".class-code")
    code = teacher.inner_text(".class-code").strip()
    join_url = teacher.inner_text(".class-url").strip()
    assert join_url.endswith(f"/join/{code}")
    assert api(teacher, f"/api/sessions/{code}")["join_url"] == join_url

    # The QR code on the teacher's screen decodes to the join URL.
    teacher.wait_for_function("() => document.querySelector('.class-qr').naturalWidth > 0")
    decoded = zxingcpp.read_barcodes(Image.open(io.BytesIO(teacher.locator(".class-qr").screenshot())))
    assert [d.text for d in decoded] == [join_url]

    students = [new_page() for _ in range(3)]
    fetched: list[dict[str, str]] = []  # a following student's API requests name its session and student id
    students[0].on("request", lambda r: fetched.append(r.headers)
                   if "/api/models/" in r.url and r.resource_type == "fetch" else None)  # (not <img> loads)
    for student in students:
        student.goto(join_url)  # what scanning the code opens
        student.wait_for_selector("text=Following the teacher.")
    teacher.wait_for_function("() => document.querySelector('.class-followers').textContent === '3'")

    # Following: the teacher picks an image and a tab; every student's page shows the same view.
    pick_sample(teacher, 2)
    teacher.click(".view-tabs button:has-text('Layers')")
    teacher.wait_for_function("() => new URLSearchParams(location.search).get('view') === 'layers'")
    for student in students:
        wait_same_view(student, teacher)
        student.wait_for_selector("table.arch-table[data-model='lenet5'], .view")
    same = lambda a, b: "".join(filter(str.isalnum, a)).upper() == "".join(filter(str.isalnum, b)).upper()  # noqa: E731
    last = fetched[-1] if fetched else {}  # (requests made before the page joined carry no session)
    assert same(last.get("x-convscope-session", ""), code) and len(last.get("x-convscope-student", "")) == 24, \
        (code, last.get("x-convscope-session"), last.get("x-convscope-student"))
    explorer = students[1]

    # Exploring: one student wanders off and stays put while the teacher moves on; the others follow.
    explorer.click("text=Explore on my own")
    explorer.click(".view-tabs button:has-text('Saliency')")
    teacher.click(".view-tabs button:has-text('Step-through')")
    teacher.wait_for_function("() => new URLSearchParams(location.search).get('view') === 'step-through'")
    for student in (students[0], students[2]):
        wait_same_view(student, teacher)
    explorer.wait_for_selector(".class-away:not([hidden])")
    assert "Step-through" in explorer.inner_text(".class-away")
    assert query(explorer)["view"] == "saliency"
    teacher.screenshot(path=str(shots / "classroom-teacher-1280.png"))
    students[0].screenshot(path=str(shots / "classroom-student-following-1280.png"))
    explorer.screenshot(path=str(shots / "classroom-student-exploring-1280.png"))

    # Snapping back: the teacher's view at once.
    explorer.click("text=Snap back")
    wait_same_view(explorer, teacher)
    explorer.wait_for_selector("text=Following the teacher.")

    # The wall: two students send their own images (one with a hostile name), one sends the teacher's.
    sent: dict[str, str] = {}
    for student, name, sample in ((students[0], "Ada", 5), (students[2], HOSTILE_NAME, 7)):
        student.click("text=Explore on my own")
        sent[name] = pick_sample(student, sample)
        student.fill(".class-name", name)
        student.click("text=Send my image to the wall")
        student.wait_for_selector("text=Sent: it is on the class wall.")
    explorer.click("text=Send my image to the wall")
    explorer.wait_for_selector("text=Sent: it is on the class wall.")
    sent["Anonymous"] = query(explorer)["image"]

    teacher.click("text=/Show wall/")
    teacher.wait_for_function("() => document.querySelectorAll('.wall-tile').length === 3")
    teacher.wait_for_selector("text=Hide wall (3)")
    tiles = teacher.eval_on_selector_all(".wall-tile", """tiles => tiles.map(t => ({
        image: t.dataset.imageId, probability: Number(t.dataset.probability), label: t.dataset.label,
        name: t.querySelector('.wall-name').textContent, nameHtml: t.querySelector('.wall-name').innerHTML,
        shown: t.querySelector('.wall-pred').textContent }))""")
    assert {tile["name"]: tile["image"] for tile in tiles} == sent
    for tile in tiles:
        truth = api(teacher, f"/api/models/lenet5/images/{tile['image']}/predictions?top_k=3")["predictions"][0]
        assert tile["label"] == truth["label"]
        assert tile["probability"] == pytest.approx(truth["probability"], rel=1e-5)
        assert tile["shown"].startswith(truth["label"])
    hostile = next(tile for tile in tiles if tile["name"] == HOSTILE_NAME)
    assert "<img" not in hostile["nameHtml"]  # shown as text, escaped
    assert teacher.title() != "1"

    teacher.select_option(".wall-sort", "least-confident")
    order = teacher.eval_on_selector_all(".wall-tile", "tiles => tiles.map(t => Number(t.dataset.probability))")
    assert order == sorted(order)
    teacher.select_option(".wall-sort", "most-confident")
    order = teacher.eval_on_selector_all(".wall-tile", "tiles => tiles.map(t => Number(t.dataset.probability))")
    assert order == sorted(order, reverse=True)
    teacher.screenshot(path=str(shots / "classroom-teacher-wall-1280.png"))
    teacher.set_viewport_size({"width": 1024, "height": 640})
    teacher.screenshot(path=str(shots / "classroom-teacher-wall-1024.png"))

    # A click on the wall makes that image the teacher's, and so the followers'.
    teacher.click(f".wall-tile[data-image-id='{sent['Ada']}']")
    teacher.wait_for_function("id => new URLSearchParams(location.search).get('image') === id", arg=sent["Ada"])
    wait_same_view(explorer, teacher)

    # Clearing the wall, then ending the session.
    teacher.click("text=Clear wall")
    teacher.wait_for_function("() => document.querySelectorAll('.wall-tile').length === 0")
    assert api(teacher, f"/api/sessions/{code}")["submissions"] == 0
    teacher.click("text=End session")
    teacher.wait_for_selector("text=Start class session")
    for student in students:
        student.wait_for_selector("text=The class session has ended")
    assert teacher.request.get(f"/api/sessions/{code}").status == 404


def test_follow_state_math(page) -> None:
    """js/classroom/follow-state.js: what following changes, and which keys stay private to one browser."""
    page.goto("/")  # the module is imported from the page's origin
    result = page.evaluate("""async () => {
        const m = await import('/static/js/classroom/follow-state.js');
        const mine = {session: 'ABCDEF', model: 'lenet5', view: 'layers', layer: 'conv1', channel: '3'};
        const teacher = {model: 'lenet5', view: 'step-through', layer: 'conv1', step: '12', session: 'ZZZZZZ'};
        return {
            changes: m.changesToFollow(mine, teacher),
            shared: m.sharedState({session: 'ABCDEF', view: 'layers', empty: '', none: null}),
            same: m.showsSameView({session: 'X', view: 'a'}, {view: 'a'}),
            differ: m.showsSameView({view: 'a', layer: 'x'}, {view: 'a'}),
            described: m.describeView({view: 'layers', layer: 'conv2', channel: '4'}, new Map([['layers', 'Layers']])),
            // the teacher goes live: students follow model and image but keep their own view (no class of cameras)
            live: m.changesToFollow({model: 'lenet5', view: 'layers'}, {model: 'efficientnet_lite0', view: 'live'}),
            liveFromLive: m.changesToFollow({view: 'live'}, {view: 'live', image: 'abc'}),
            liveSame: m.showsSameView({model: 'm', view: 'layers'}, {model: 'm', view: 'live'}),
            liveDescribed: m.describeView({view: 'live'}, new Map([['live', 'Live']])),
        };
    }""")
    assert result["changes"] == {"view": "step-through", "step": "12", "channel": None}
    assert result["shared"] == {"view": "layers"}
    assert result["same"] is True and result["differ"] is False
    assert result["described"] == "Layers · conv2 · channel 4"
    assert result["live"] == {"model": "efficientnet_lite0"}
    assert result["liveFromLive"] == {"view": "overview", "image": "abc"}
    assert result["liveSame"] is True
    assert result["liveDescribed"] == "Live (on the teacher's screen)"
