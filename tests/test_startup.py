"""``convscope serve`` serves the page while the app loads (server.startup.StartingApp): the page, its static files
and a health answer 503 "starting" (not ready for a load balancer) come at once; an API request waits for the full app and then gets its
answer, or 503 ``starting`` after ``startup_wait_s``; a start that fails says why and the CLI exits 2."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
from PIL import Image

from server.main import create_app
from server.settings import Settings
from server.startup import StartingApp
from tests.harness import REPO_ROOT, serving, wait_until
from tests.startup_support import GatedBuild


def test_page_and_health_at_once_api_waits_for_the_app(tmp_path) -> None:
    settings = Settings(storage_dir=tmp_path / "images")
    build = GatedBuild(settings)
    ready = threading.Event()
    app = StartingApp(settings, build, on_ready=ready.set)
    with serving(app) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client, \
            ThreadPoolExecutor(1) as pool:
        page = client.get("/")
        assert page.status_code == 200 and 'data-default-model="lenet5"' in page.text
        assert page.headers["x-frame-options"] == "DENY"  # the same edge as the full app's
        assert "content-security-policy" in page.headers
        assert client.get("/static/js/app.js").status_code == 200
        health = client.get("/api/health")  # not ready: a load balancer's or Compose's check must fail
        assert health.status_code == 503 and health.headers["retry-after"].isdigit()
        assert health.json()["status"] == "starting" and health.json()["error"]["code"] == "starting"
        assert app.state == "loading"
        assert client.get("/api/health", headers={"Host": "evil.example"}).status_code == 400  # Host guard

        models = pool.submit(lambda: httpx.get(f"http://127.0.0.1:{port}/api/models", timeout=60))
        wait_until(lambda: app.waiting == 1, what="the API request to wait for the app")
        assert not models.done()
        build.gate.set()
        answer = models.result(timeout=60)
        assert answer.status_code == 200 and any(m["id"] == "lenet5" for m in answer.json()["models"])
        assert ready.is_set() and app.state == "ready"
        ready_health = client.get("/api/health")  # now the full app's own answer
        assert ready_health.status_code == 200 and ready_health.json()["status"] == "ok"
        assert client.get("/").text == page.text


def test_api_request_gets_503_starting_after_the_wait(tmp_path) -> None:
    settings = Settings(storage_dir=tmp_path / "images", startup_wait_s=0)
    build = GatedBuild(settings)
    app = StartingApp(settings, build)
    with serving(app) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        answer = client.get("/api/models")
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "starting"
        assert answer.headers["retry-after"].isdigit()
        build.gate.set()
        wait_until(lambda: app.state == "ready", what="the app to start")
        assert client.get("/api/models").status_code == 200


def test_a_failed_start_is_reported_and_refused(tmp_path) -> None:
    settings = Settings(storage_dir=tmp_path / "images")
    build = GatedBuild(settings, error=RuntimeError("--device cuda was asked for, but PyTorch sees no CUDA device"))
    failures: list[BaseException] = []
    app = StartingApp(settings, build, on_failure=failures.append)
    with serving(app) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        build.gate.set()
        wait_until(lambda: bool(failures), what="the failure to be reported")
        assert "CUDA" in str(failures[0])
        assert client.get("/api/health").json()["status"] == "failed"
        assert client.get("/api/models").json()["error"]["code"] == "starting"


def test_serve_with_a_broken_models_file_says_why_and_exits_2(tmp_path) -> None:
    broken = tmp_path / "models.toml"
    broken.write_text("[[model]]\nid = 'x'\n")  # no architecture, no file: refused with a reason
    result = subprocess.run([sys.executable, "-m", "server.cli", "serve", "--port", "0", "--models-file", str(broken)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                            env={"PATH": "/usr/bin:/bin", "CONVSCOPE_STORAGE_DIR": str(tmp_path / "images")})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "convscope: " in result.stderr and "models.toml" in result.stderr, result.stderr[-2000:]


def test_a_model_says_loading_while_it_is_built_then_loaded(tmp_path) -> None:
    """Models are built on their first request; meanwhile GET /api/models says so."""
    import dataclasses

    from models.models_file import app_registry

    gate = threading.Event()
    registry = app_registry(None)
    lenet = registry.get("lenet5")

    def gated_builder():  # noqa: ANN202
        assert gate.wait(60), "the test never opened the gate"
        return lenet.builder()

    registry.register(dataclasses.replace(lenet, id="lenet5-slow", builder=gated_builder))
    app = create_app(Settings(storage_dir=tmp_path / "images"), registry)

    def state() -> str:
        models = httpx.get(f"http://127.0.0.1:{port}/api/models", timeout=30).json()["models"]
        return next(m["load"] for m in models if m["id"] == "lenet5-slow")

    with serving(app) as port, ThreadPoolExecutor(1) as pool:
        assert state() == "not_loaded"
        png = io.BytesIO()
        Image.new("L", (28, 28), 255).save(png, format="PNG")
        image_id = httpx.post(f"http://127.0.0.1:{port}/api/images", files={"file": ("digit.png", png.getvalue())},
                              timeout=60).json()["image_id"]
        url = f"http://127.0.0.1:{port}/api/models/lenet5-slow/images/{image_id}/predictions"
        detail = pool.submit(lambda: httpx.get(url, timeout=60))
        wait_until(lambda: state() == "loading", what="the model to say it is loading")
        gate.set()
        assert detail.result(timeout=60).status_code == 200
        assert state() == "loaded"
