"""What the benchmarks share with the tests (``tests/harness.py``): the repository root, the offline data,
free ports, waiting with a deadline, a real uvicorn and redis-server. Run a benchmark from the repository
root (``.venv/bin/python bench/bench_x.py``): the root is put on ``sys.path`` here so the imports work."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.harness import (  # noqa: E402  (the path above first)
    REPO_ROOT,
    SHARED_DATA,
    LiveServer,
    Nginx,
    RedisServer,
    UvicornProcess,
    free_port,
    live_server,
    serving,
    start_redis,
    stop_process,
    wait_until,
)

__all__ = ["REPO_ROOT", "SHARED_DATA", "LiveServer", "Nginx", "RedisServer", "UvicornProcess", "free_port",
           "live_server", "serving", "start_redis", "stop_process", "wait_until"]
