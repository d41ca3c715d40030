"""The page runs under its own Content-Security-Policy: Chromium enforces it, and no view violates it."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import png_bytes

CSP_WATCH = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'} at ${e.sourceFile}:${e.lineNumber}`);
});
"""


@pytest.mark.browser
def test_page_works_under_its_csp(page, console, live_server: str) -> None:
    response = page.request.get(live_server + "/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.add_init_script(CSP_WATCH)
    page.goto("/")
    # Control: the browser enforces the policy and the watch sees it (an injected inline script never runs).
    console.allow(r"inline script violates the following Content Security Policy")
    page.evaluate("""() => { const s = document.createElement('script'); s.textContent = 'window.__ran = 1';
                             document.head.appendChild(s); }""")
    page.wait_for_function("() => window.__cspViolations.length > 0")
    assert page.evaluate("window.__ran") is None
    page.evaluate("window.__cspViolations.length = 0")
    page.wait_for_selector("#view-tabs [role=tab]")
    page.set_input_files("#file-input", files=[{"name": "digit.png", "mimeType": "image/png",
                                                "buffer": png_bytes(np.eye(28, dtype=np.uint8) * 255)}])
    page.wait_for_function("() => new URL(location.href).searchParams.get('image')")
    tabs = page.query_selector_all("#view-tabs [role=tab]:not([disabled]):not([aria-disabled=true])")
    assert tabs
    for index in range(len(tabs)):
        tab = page.query_selector_all("#view-tabs [role=tab]:not([disabled]):not([aria-disabled=true])")[index]
        view = tab.get_attribute("data-view")
        tab.click()
        page.wait_for_selector(f"#view .view-body.view-{view}")
        page.wait_for_load_state("networkidle")  # the view has fetched and drawn
    violations = page.evaluate("window.__cspViolations")
    assert violations == [], violations
