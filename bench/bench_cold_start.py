"""How long a user waits for the first page: ``convscope serve`` and ``scripts/serve`` on a set-up machine.

Each round starts, one after the other (interleaved, the machine is shared and noisy):

  hello          a bare uvicorn serving a one-route Starlette app: Python, uvicorn and a socket — the baseline
  serve          ``python -m server.cli serve`` (what the ``convscope serve`` command runs)
  scripts/serve  the README's one command: ``scripts/setup`` (nothing to install) then ``convscope serve``

and measures, from the process start, the first 200 of ``GET /`` (the page), and for the two ConvScope starts the
moment ``/api/health`` says ``ok`` (PyTorch and the services loaded: API answers need no wait). Goals: the page
≤ 3 s after ``serve``; ``scripts/serve`` adds ≤ 1 s. Figures are medians of the rounds, with the baseline's.

``scripts/serve`` is only timed when ``scripts/setup --check`` says .venv is up to date (it would otherwise
install into .venv, which is no start-up time): run ``scripts/setup`` once first.

    .venv/bin/python bench/bench_cold_start.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from harness import REPO_ROOT, free_port, stop_process

GOAL_PAGE_S = 3.0
GOAL_SETUP_ADDS_S = 1.0
HELLO = ("from starlette.applications import Starlette\n"
         "from starlette.responses import HTMLResponse\n"
         "from starlette.routing import Route\n"
         "async def page(request):\n"
         "    return HTMLResponse('<!doctype html><title>hello</title>')\n"
         "app = Starlette(routes=[Route('/', page)])\n")


def start_and_time(command: list[str], port: int, env: dict[str, str], ready: bool, timeout: float = 180.0
                   ) -> tuple[float, float | None]:
    """Seconds from starting ``command`` to the first 200 of ``GET /``, and (``ready``) to ``/api/health`` saying
    ok. One kept-alive client polls; the process is stopped (and waited for) at the end."""
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    page_s = ready_s = None
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            deadline = started + timeout
            while page_s is None:
                if process.poll() is not None:
                    raise RuntimeError(f"{command} exited with {process.returncode}")
                try:
                    if client.get("/").status_code == 200:
                        page_s = time.perf_counter() - started
                        break
                except httpx.TransportError:
                    pass
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"{command}: no page after {timeout} s")
                time.sleep(0.01)
            while ready and ready_s is None:
                if client.get("/api/health").json().get("status") == "ok":
                    ready_s = time.perf_counter() - started
                elif time.perf_counter() > deadline:
                    raise RuntimeError(f"{command}: not ready after {timeout} s")
                else:
                    time.sleep(0.05)
    finally:
        stop_process(process, timeout=30)
    return page_s, ready_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    python = sys.executable
    setup_ok = subprocess.run([str(REPO_ROOT / "scripts" / "setup"), "--check"], cwd=REPO_ROOT).returncode == 0
    if not setup_ok:
        print("scripts/serve not timed: scripts/setup --check says .venv would be installed into; run scripts/setup")
    with tempfile.TemporaryDirectory() as tmp:
        hello = Path(tmp) / "hello_app.py"
        hello.write_text(HELLO)
        # the checkout first: .venv/bin/convscope would otherwise import the package installed (editable) elsewhere
        env = {**os.environ, "CONVSCOPE_STORAGE_DIR": str(Path(tmp) / "images"), "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{tmp}"}
        runs: dict[str, list[tuple[float, float | None]]] = {"hello": [], "serve": [], "scripts/serve": []}
        for _ in range(args.rounds):
            port = free_port()
            runs["hello"].append(start_and_time([python, "-m", "uvicorn", "hello_app:app", "--port", str(port),
                                                 "--log-level", "warning"], port, env, ready=False))
            port = free_port()
            runs["serve"].append(start_and_time([python, "-m", "server.cli", "serve", "--port", str(port)], port, env,
                                                ready=True))
            if setup_ok:
                port = free_port()
                runs["scripts/serve"].append(start_and_time([str(REPO_ROOT / "scripts" / "serve"), "--port",
                                                             str(port)], port, env, ready=True))
    load = os.getloadavg()
    print(f"{args.rounds} rounds, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs)")
    hello_s = statistics.median(p for p, _ in runs["hello"])
    for name, values in runs.items():
        if not values:
            continue
        page = statistics.median(p for p, _ in values)
        ready = [r for _, r in values if r is not None]
        ready_text = f"   API ready {statistics.median(ready):5.2f} s" if ready else ""
        print(f"{name:<14} first page {page:5.2f} s ({page / hello_s:4.1f}× hello){ready_text}   "
              f"(pages: {', '.join(f'{p:.2f}' for p, _ in values)})")
    serve_page = statistics.median(p for p, _ in runs["serve"])
    print(f"serve's first page {serve_page:.2f} s: {'ok' if serve_page <= GOAL_PAGE_S else 'ABOVE'} goal "
          f"{GOAL_PAGE_S} s")
    if runs["scripts/serve"]:
        added = statistics.median(p for p, _ in runs["scripts/serve"]) - serve_page
        print(f"scripts/serve adds {added:+.2f} s: {'ok' if added <= GOAL_SETUP_ADDS_S else 'ABOVE'} goal "
              f"{GOAL_SETUP_ADDS_S} s")


if __name__ == "__main__":
    main()
