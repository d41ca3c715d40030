"""What the start-up tests share (tests/test_startup.py, tests/browser/test_starting_page.py)."""

from __future__ import annotations

import threading

from server.main import create_app
from server.settings import Settings


class GatedBuild:
    """The full app, built only once the test opens the gate (as if PyTorch took that long to import)."""

    def __init__(self, settings: Settings, error: BaseException | None = None) -> None:
        self.settings = settings
        self.error = error
        self.gate = threading.Event()

    def __call__(self):  # noqa: ANN204
        assert self.gate.wait(60), "the test never opened the gate"
        if self.error is not None:
            raise self.error
        return create_app(self.settings)
