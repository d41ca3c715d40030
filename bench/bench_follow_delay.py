"""Teacher → student delay in a class session (issue 20 §3): how long after the teacher steps the
step-through does a student's page show the same sub-step?

Starts the real app (uvicorn in a subprocess, a temporary image store), opens a teacher page and
``--students`` student pages in headless Chromium (each its own browser context, following by the join
URL), puts everyone on LeNet-5's step-through, then makes ``--changes`` changes on the teacher's page (one
step forward each, with the keyboard) and measures, for each change and each student, the time from the
teacher's key press to the student's canvas drawing that frame (both read with ``Date.now()`` on one machine).
The path measured is the whole one: the teacher's URL write, the page's publish (its 120 ms debounce), the
PUT, the server's Server-Sent Event, the student's URL update and the step-through's redraw.

Baseline, measured in the same run and interleaved with the page changes: the bare SSE path, a raw HTTP
client's PUT of a state to the same session until another raw client has read the event (no browser). The
ratio page/bare says what the pages add to the transport.

Prints median / p95 / max of both (ms), their ratio, and the load average. Changes are spaced by
``--gap`` seconds so one does not overtake the next.

Run:  .venv/bin/python bench/bench_follow_delay.py [--students 3] [--changes 30] [--gap 0.6]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
from harness import live_server  # the one harness (bench/harness.py → tests/harness.py)

CHROMIUM = os.environ.get("CONVSCOPE_CHROMIUM", "/usr/bin/chromium")
CANVAS = "#step-through-canvas"
# every frame the step-through draws, with the time it was drawn (a MutationObserver on data-frame)
FRAME_PROBE = """
(() => {
  window.__frames = [];
  const watch = () => {
    const c = document.querySelector('#step-through-canvas');
    if (!c) return false;
    new MutationObserver(() => window.__frames.push({ frame: Number(c.dataset.frame), t: Date.now() }))
      .observe(c, { attributes: true, attributeFilter: ['data-frame'] });
    return true;
  };
  const wait = new MutationObserver(() => { if (watch()) wait.disconnect(); });
  addEventListener('DOMContentLoaded', () => { if (!watch()) wait.observe(document.body, { childList: true, subtree: true }); });
})();
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(name: str, values: list[float]) -> str:
    return (f"{name:>22}: n={len(values):4d}  median {statistics.median(values):7.1f} ms  p95 {pct(values, 0.95):7.1f} ms"
            f"  max {max(values):7.1f} ms")


class BareFollower:
    """A raw SSE reader on the session's events: the time each state (by its `bench` key) arrived."""

    def __init__(self, base: str, code: str) -> None:
        self.arrived: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(base, code), daemon=True)
        self._ready = threading.Event()
        self._thread.start()
        self._ready.wait(30)

    def _run(self, base: str, code: str) -> None:
        with httpx.Client(base_url=base, timeout=None) as client, client.stream("GET", f"/api/sessions/{code}/events") as stream:
            self._ready.set()
            event = None
            for line in stream.iter_lines():
                if self._stop.is_set():
                    return
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event == "state":
                    state = json.loads(line.split(":", 1)[1]).get("state", {})
                    if "bench" in state:
                        self.arrived.setdefault(state["bench"], time.time() * 1000)

    def stop(self) -> None:
        self._stop.set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=3)
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--gap", type=float, default=0.6, help="seconds between two changes")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, live_server(Path(tmp), threads=None, start_timeout_s=240) as server, \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        http = httpx.Client(base_url=server.url, timeout=30)
        png = http.get("/api/samples/mnist-test-3.png").content
        image = http.post("/api/images", files={"file": ("d.png", png, "image/png")}).json()["image_id"]

        def new_page():
            context = browser.new_context(viewport={"width": 1280, "height": 720}, base_url=server.url)
            context.set_default_timeout(120_000)
            page = context.new_page()
            page.add_init_script(FRAME_PROBE)
            return page

        teacher = new_page()
        teacher.goto(f"/?model=lenet5&image={image}&view=step-through&layer=features.0&pos=5,5")
        teacher.wait_for_selector(f"{CANVAS}[data-ready='1']")
        teacher.click("text=Start class session")
        teacher.wait_for_selector(".class-code")
        join_url = teacher.inner_text(".class-url").strip()
        students = []
        for _ in range(args.students):
            page = new_page()
            page.goto(join_url)
            page.wait_for_selector("text=Following the teacher.")
            page.wait_for_selector(f"{CANVAS}[data-ready='1'][data-cell='5,5']")
            students.append(page)

        # the bare path: its own session, a raw teacher and a raw follower
        bare = http.post("/api/sessions", json={"state": {"model": "lenet5"}}).json()
        bare_follower = BareFollower(server.url, bare["code"])
        bare_headers = {"Authorization": f"Bearer {bare['teacher_token']}"}

        page_delays: list[float] = []
        bare_delays: list[float] = []
        teacher.evaluate("document.activeElement && document.activeElement.blur()")  # arrows step, not switch tabs
        for i in range(args.changes):
            # the page path: one step forward on the teacher's page
            before = int(teacher.get_attribute(CANVAS, "data-frame"))
            pressed = teacher.evaluate("Date.now()")
            teacher.keyboard.press("ArrowRight")
            target = before + 1
            for student in students:
                student.wait_for_function("f => window.__frames.some((r) => r.frame === f)", arg=target)
                seen = student.evaluate("f => window.__frames.filter((r) => r.frame === f).at(-1).t", target)
                page_delays.append(seen - pressed)
            # the bare path, interleaved
            key = f"b{i}"
            sent = time.time() * 1000
            http.put(f"/api/sessions/{bare['code']}/state", json={"state": {"model": "lenet5", "bench": key}}, headers=bare_headers)
            deadline = time.time() + 10
            while key not in bare_follower.arrived and time.time() < deadline:
                time.sleep(0.002)
            if key in bare_follower.arrived:
                bare_delays.append(bare_follower.arrived[key] - sent)
            time.sleep(args.gap)
        bare_follower.stop()
        browser.close()

    print(f"teacher → {args.students} students, {args.changes} step-through changes, {server.url}")
    print(summary("page → page (full)", page_delays))
    print(summary("bare SSE (baseline)", bare_delays))
    print(f"{'ratio page/bare':>22}: median {statistics.median(page_delays) / statistics.median(bare_delays):5.1f}×"
          f"  p95 {pct(page_delays, 0.95) / pct(bare_delays, 0.95):5.1f}×")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
