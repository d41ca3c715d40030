"""Helpers for driving the page in browser tests: URL state, waiting for the shell, checking numbers.

Import them in any browser test (``from tests.browser.page_helpers import open_page, api, query``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest


def api(page, path: str) -> dict:
    """GET a JSON API path through the page's context (same server, same cookies); asserts 2xx."""
    response = page.request.get(path)
    assert response.ok, f"{path}: {response.status} {response.text()}"
    return response.json()


def query(page) -> dict[str, str]:
    """The page's URL state (model, image, weights, view, …) as a dict."""
    return {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}


def open_page(page, url: str = "/") -> None:
    """Load a page URL and wait until the shell has rendered the model (architecture table filled).

    The architecture table is the Overview tab's, so a URL without a view opens that tab (the page's
    own first view is the Network)."""
    if "view=" not in url:
        url += ("&" if "?" in url else "?") + "view=overview"
    page.goto(url)
    page.wait_for_selector("table.arch-table[data-model] tbody tr")


def choose_model(page, model_id: str) -> None:
    """Pick a model in the header and wait until the page shows it."""
    page.select_option("#model-select", model_id)
    page.wait_for_selector(f"table.arch-table[data-model='{model_id}']")


def wait_for_predictions(page) -> list[dict]:
    """The bars once they are for the model, weights and image the URL names; returns their data."""
    state = query(page)
    model = api(page, f"/api/models/{state['model']}?weights={state.get('weights', 'auto')}")
    key = f"{state['model']}|{model['weights_used']}|{state['image']}"
    page.wait_for_selector(f".predictions[data-for='{key}'] .bar-row")
    return page.eval_on_selector_all(
        ".predictions .bar-row",
        """rows => rows.map(row => {
            const fill = row.querySelector('.bar-fill').getBoundingClientRect();
            const track = row.querySelector('.bar-track').getBoundingClientRect();
            return {
                index: Number(row.dataset.index),
                probability: Number(row.dataset.probability),
                label: row.querySelector('.bar-label').textContent,
                text: row.querySelector('.bar-value').textContent,
                fill: fill.width, track: track.width,
            };
        })""",
    )


def assert_predictions_match_api(page, rows: list[dict]) -> None:
    """The bars show exactly what GET …/predictions answers for the URL's state."""
    state = query(page)
    model = api(page, f"/api/models/{state['model']}?weights={state.get('weights', 'auto')}")
    truth = api(
        page,
        f"/api/models/{state['model']}/images/{state['image']}/predictions?top_k=5&weights={model['weights_used']}",
    )["predictions"]
    assert len(rows) == len(truth) == min(5, model["num_classes"])
    for row, expected in zip(rows, truth):
        assert row["index"] == expected["index"]
        assert row["label"] == expected["label"]
        assert row["probability"] == pytest.approx(expected["probability"], rel=1e-6)
        assert row["text"] == f"{expected['probability'] * 100:.1f}%"
        # the bar's length is the probability (2 px minimum so tiny bars stay visible)
        assert row["fill"] == pytest.approx(max(2.0, expected["probability"] * row["track"]), abs=3.0)


def table_layers(page) -> list[str]:
    """Layer names of the architecture table's rows ('' for the input row)."""
    return page.eval_on_selector_all("table.arch-table tbody tr", "rows => rows.map(r => r.dataset.layer)")


def assert_no_horizontal_overflow(page) -> None:
    """Nothing sticks out to the right (wide tables scroll inside their own box)."""
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def upload_photo(page, photo: Path) -> str:
    """Upload a file with the file picker; returns its image id once the URL names it."""
    page.set_input_files("#file-input", str(photo))
    image_id = hashlib.sha256(photo.read_bytes()).hexdigest()
    page.wait_for_function("id => new URLSearchParams(location.search).get('image') === id", arg=image_id)
    return image_id


# Record every pending timer with the stack that made it, so a test can wait until a module (by file
# name) has none left: a condition instead of a fixed wait.
TIMER_PROBE = """
(() => {
  const pending = new Map();
  const set = window.setTimeout.bind(window);
  const clear = window.clearTimeout.bind(window);
  window.setTimeout = (fn, ms, ...args) => {
    const stack = new Error().stack || '';
    const id = set((...a) => { pending.delete(id); fn(...a); }, ms, ...args);
    pending.set(id, stack);
    return id;
  };
  window.clearTimeout = (id) => { pending.delete(id); clear(id); };
  window.__pendingTimers = (fragment) => [...pending.values()].filter((s) => s.includes(fragment)).length;
})();
"""
