"""Browser-test harness: the real app served by uvicorn, headless Debian Chromium driven by Playwright.

Fixtures for every browser test (mark the tests ``@pytest.mark.browser``):

- ``live_server``: base URL of the app, started once per session in a subprocess on 127.0.0.1 and a
  free port, with a temporary image store; stopped at the end. Its log is printed if it fails to start.
- ``browser``: one Chromium per session (Debian's /usr/bin/chromium, never a downloaded one).
- ``console``: what the page logged. Every console error and uncaught page error fails the test,
  unless the test first calls ``console.allow(pattern)`` for an error it expects (e.g. a 415 answer
  to a deliberately bad upload).
- ``page``: a fresh page (own context, 1280×720, base URL set to the live server), checked by ``console``.
- ``shots``: a folder for screenshots (``$CONVSCOPE_SHOTS_DIR``, default /tmp/shots).
- ``photos``: the offline CC0 photos in ../shared/data/images (skips when absent).

Helpers to drive the page (open it, read the URL state, wait for predictions and check them against
the API) are in ``tests/browser/page_helpers.py``.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.harness import SHARED_DATA
from tests.harness import live_server as run_live_server

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CONVSCOPE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PROJECTOR = {"width": 1280, "height": 720}
LAPTOP = {"width": 1440, "height": 900}
SERVER_START_TIMEOUT_S = 180  # torch import and the default model on a busy shared CPU


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of the real app (uvicorn in a subprocess, temporary image store), served as `convscope serve`
    serves it (torch's own thread count)."""
    # every test page comes from 127.0.0.1, so the per-address cap on live class sessions (tested on its own
    # server in test_class_holes) would refuse the sixth test that starts a session while earlier ones linger
    with run_live_server(tmp_path_factory.mktemp("live-server"), env={"CONVSCOPE_MAX_SESSIONS_PER_ADDRESS": "0"},
                         threads=None, start_timeout_s=SERVER_START_TIMEOUT_S) as server:
        yield server.url


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """One headless Chromium for the session."""
    if not Path(CHROMIUM).exists() and shutil.which(CHROMIUM) is None:
        pytest.skip(f"no Chromium at {CHROMIUM}")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class ConsoleWatch:
    """Console errors and page errors seen by one page; the ones no test expected fail the test."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self._allowed: list[re.Pattern[str]] = []

    def allow(self, pattern: str) -> None:
        """Expect errors matching this regular expression (e.g. the 415 of a deliberately bad upload)."""
        self._allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self._allowed)]


@pytest.fixture
def console() -> ConsoleWatch:
    return ConsoleWatch()


@contextmanager
def checked_page(browser, base_url: str, console: ConsoleWatch) -> Iterator[object]:
    """A fresh 1280×720 page in its own context on ``base_url``; any console or page error the test did not
    expect fails the test when the block ends."""
    context = browser.new_context(viewport=PROJECTOR, base_url=base_url)
    context.set_default_timeout(60_000)  # the CPU is shared; model loads can take a while
    page = context.new_page()

    def on_console(message) -> None:
        if message.type == "error":
            location = message.location or {}
            console.errors.append(f"console error: {message.text} [{location.get('url', '')}]")

    page.on("console", on_console)
    page.on("pageerror", lambda error: console.errors.append(f"page error: {error}"))
    try:
        yield page
    finally:
        context.close()
    bad = console.unexpected()
    if bad:
        pytest.fail("the page reported errors:\n" + "\n".join(bad))


@pytest.fixture
def page(browser, live_server: str, console: ConsoleWatch) -> Iterator[object]:
    """A fresh 1280×720 page on the live server; any unexpected console or page error fails the test."""
    with checked_page(browser, live_server, console) as page:
        yield page


@pytest.fixture(scope="session")
def shots() -> Path:
    """Where screenshots go, for people to look at (not compared by the tests)."""
    folder = Path(os.environ.get("CONVSCOPE_SHOTS_DIR", "/tmp/shots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def photos() -> Path:
    """The offline CC0 photos in ../shared/data/images; skip when absent."""
    folder = SHARED_DATA / "images"
    if not any(folder.glob("*.jpg")):
        pytest.skip(f"no photos in {folder}")
    return folder
