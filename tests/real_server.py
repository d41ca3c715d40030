"""A real uvicorn serving the app in a subprocess (kept importable by this name: the harness lives in
``tests/harness.py``)."""

from tests.harness import REPO_ROOT, START_TIMEOUT_S, LiveServer, free_port, live_server

__all__ = ["REPO_ROOT", "START_TIMEOUT_S", "LiveServer", "free_port", "live_server"]
