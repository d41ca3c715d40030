"""Serves the app as ``convscope serve`` does (its own process, uvicorn on 127.0.0.1), and answers a benchmark
on standard input: a line ``stats`` gets one JSON line of the server's counts back (result caches, shared
answers), a line ``memory`` one JSON line of what every result cache holds and may hold (bytes) and the
loaded models' parameters; end of input stops the server.

Run by a benchmark: python bench/serve_with_stats.py PORT   (settings from CONVSCOPE_* variables)
"""

from __future__ import annotations

import gc
import json
import sys
import threading
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.main import create_app  # noqa: E402
from server.settings import Settings  # noqa: E402


def counts(app) -> dict:  # noqa: ANN001
    state = app.state
    saliency = state.saliency_maps.cache.stats
    shared = state.shared_answers.stats
    return {"saliency_computations": saliency.computations, "saliency_shared": saliency.shared,
            "saliency_hits": saliency.hits, "answers_copied": shared.copied, "answers_ran_alone": shared.ran_alone}


def memory() -> dict:
    """Every ResultCache in the process (the loaded models' one apart): bytes held and budget."""
    from server.services.runtime.cache import ResultCache

    caches: dict[str, list[int]] = {}
    models = 0
    for obj in gc.get_objects():
        if isinstance(obj, ResultCache):
            if obj.name == "models":
                models += obj.nbytes
                continue
            held = caches.setdefault(obj.name, [0, 0])
            held[0] += obj.nbytes
            held[1] += obj.budget_bytes
    return {"caches": caches, "cache_bytes": sum(h for h, _ in caches.values()),
            "cache_budget_bytes": sum(b for _, b in caches.values()), "model_bytes": models}


def main() -> None:
    settings = Settings(host="127.0.0.1", port=int(sys.argv[1]))
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                                           timeout_graceful_shutdown=settings.shutdown_grace_s))

    def control() -> None:
        for line in sys.stdin:
            if line.strip() == "stats":
                print(json.dumps(counts(app)), flush=True)
            elif line.strip() == "memory":
                print(json.dumps(memory()), flush=True)
        server.should_exit = True

    threading.Thread(target=control, daemon=True).start()
    server.run()


if __name__ == "__main__":
    main()
