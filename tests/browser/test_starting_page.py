"""The page served while ``convscope serve`` still loads PyTorch and the models (server.startup) says so, and
becomes the usual page once the app runs: the notice goes, the model picker fills."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from server.settings import Settings
from server.startup import StartingApp
from tests.browser.conftest import checked_page
from tests.harness import serving
from tests.startup_support import GatedBuild

pytestmark = pytest.mark.browser


def test_page_says_it_is_starting_then_works(browser, console, tmp_path, shots) -> None:
    settings = Settings(storage_dir=tmp_path / "images")
    build = GatedBuild(settings)
    app = StartingApp(settings, build)
    console.allow(r"status of 503 .*/api/health")  # health is 503 "starting" until the app runs
    with serving(app) as port, checked_page(browser, f"http://127.0.0.1:{port}", console) as page:
        page.goto("/")
        notice = page.locator('[data-notice="starting"]')
        expect(notice).to_contain_text("still loading PyTorch")
        page.screenshot(path=str(shots / "starting-1280x720.png"))
        build.gate.set()
        expect(notice).to_have_count(0)
        expect(page.locator("#model-select option[value=lenet5]")).to_have_count(1)
