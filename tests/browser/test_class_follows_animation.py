"""A class follows everything the teacher does (issue 20 §3): one teacher and three students. The
step-through's sub-step, Play/Pause and speed reach the students (they animate in step), and so does
the sandbox's step; an exploring
student is told when the teacher changes the image and follows in one click; in projector mode the
teacher's top bar shows the class code and the follower count, which open Enlarge."""

from __future__ import annotations

import pytest

from tests.browser.page_helpers import open_page, query
from tests.browser.test_classroom_page import new_page, pick_sample  # noqa: F401 (the fixture)

pytestmark = pytest.mark.browser

CANVAS = "#step-through-canvas"


def wait_url(page, key: str, value: str | None) -> None:
    page.wait_for_function("([k, v]) => new URLSearchParams(location.search).get(k) === v", arg=[key, value])


def canvas_state(page) -> dict:
    return page.eval_on_selector(CANVAS, "c => ({cell: c.dataset.cell, phase: c.dataset.phase, frame: Number(c.dataset.frame)})")


def test_students_follow_the_sub_step_play_and_speed(new_page) -> None:  # noqa: F811 (the fixture)
    teacher = new_page()
    open_page(teacher, "/?model=lenet5")
    teacher.click("text=Start class session")
    teacher.wait_for_selector(".class-code")
    code = teacher.inner_text(".class-code").strip()
    join_url = teacher.inner_text(".class-url").strip()
    students = [new_page() for _ in range(3)]
    for student in students:
        student.goto(join_url)
        student.wait_for_selector("text=Following the teacher.")
    teacher.wait_for_function("() => document.querySelector('.class-followers').textContent === '3'")

    # the teacher opens the step-through on a cell and steps into its second sub-step (channel → bias)
    pick_sample(teacher, 2)
    teacher.click(".view-tabs button:has-text('Step-through')")
    teacher.wait_for_selector(f"{CANVAS}[data-ready='1']")
    teacher.click(".player [data-action='forward']")
    wait_url(teacher, "phase", "1")
    teacher_at = canvas_state(teacher)
    for student in students:
        student.wait_for_function(
            "([cell, phase]) => { const c = document.querySelector('#step-through-canvas');"
            " return c && c.dataset.ready === '1' && c.dataset.cell === cell && c.dataset.phase === phase; }",
            arg=[teacher_at["cell"], teacher_at["phase"]])

    # speed, then Play: every student's animation runs at the teacher's speed from the teacher's frame
    teacher.select_option(".player-speed", "8")
    wait_url(teacher, "speed", "8")
    teacher.click(".player-play")
    wait_url(teacher, "play", "1")
    for student in students:
        wait_url(student, "play", "1")
        student.wait_for_function("() => document.querySelector('.player-play').getAttribute('aria-pressed') === 'true'")
        assert student.input_value(".player-speed") == "8"
        student.wait_for_function("f => Number(document.querySelector('#step-through-canvas').dataset.frame) > f",
                                  arg=teacher_at["frame"])  # it moves on by itself

    # Pause: everyone stops on the teacher's frame
    teacher.click(".player-play")
    wait_url(teacher, "play", None)
    stopped = canvas_state(teacher)
    for student in students:
        student.wait_for_function(
            "([cell, phase]) => { const c = document.querySelector('#step-through-canvas');"
            " return document.querySelector('.player-play').getAttribute('aria-pressed') === 'false'"
            " && c.dataset.cell === cell && c.dataset.phase === phase; }",
            arg=[stopped["cell"], stopped["phase"]])

    # the sandbox: the teacher's step reaches the class
    teacher.click(".view-tabs button:has-text('Sandbox')")
    teacher.wait_for_selector("#sandbox-canvas[data-output-shape]")
    teacher.click(".player [data-action='forward']")
    teacher.click(".player [data-action='forward']")
    wait_url(teacher, "sbstep", "2")
    for student in students:
        student.wait_for_function("() => document.querySelector('#sandbox-canvas')?.dataset.frame === '2'")
    teacher.click(".view-tabs button:has-text('Step-through')")

    # an exploring student is told when the teacher changes the image, and follows in one click
    explorer = students[1]
    explorer.click("text=Explore on my own")
    explorer.wait_for_selector("text=Exploring on your own.")
    new_image = pick_sample(teacher, 3)
    notice = explorer.locator("[data-notice='class-teacher-image']")
    notice.wait_for()
    assert "The teacher changed the image" in notice.inner_text()
    box = notice.bounding_box()
    assert box and 0 <= box["y"] and box["y"] + box["height"] <= explorer.viewport_size["height"]
    assert query(explorer)["image"] != new_image  # told, not pulled along
    notice.locator("button.notice-action").click()
    wait_url(explorer, "image", new_image)
    explorer.wait_for_selector("text=Following the teacher.")

    # projector mode: the code and the follower count in the top bar; a click opens Enlarge
    teacher.locator("body").press("p")
    teacher.wait_for_function("() => document.documentElement.classList.contains('is-projector')")
    badge = teacher.locator("#class-badge")
    badge.wait_for(state="visible")
    assert code in badge.inner_text() and "3" in teacher.inner_text("#class-badge .class-badge-count")
    assert not teacher.locator(".class-code").is_visible()  # the sidebar with the class card is hidden
    badge.click()
    teacher.wait_for_selector("dialog.class-dialog[open]")
    assert code in teacher.inner_text(".class-dialog-code")
