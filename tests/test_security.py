"""Security: headers on every answer (nosniff, CSP without inline script, no referrer), CORS closed unless
configured, fixed content types for served files, and no path parameter reaching outside its store —
including encoded and double-encoded ``../``. The page itself is checked to run under its CSP."""

from __future__ import annotations

import io
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import anyio
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from server.main import create_app
from server.security import CONTENT_SECURITY_POLICY
from server.settings import Settings
from tests.conftest import png_bytes

SENTINEL = b"TOP-SECRET-SENTINEL-6d1f"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str, Path]]:
    """An app whose image store sits next to a secret file that no request may ever read."""
    root = tmp_path_factory.mktemp("secured")
    secret = Image.new("RGB", (4, 4), (1, 2, 3))
    buf = io.BytesIO()
    secret.save(buf, format="PNG", pnginfo=_text_chunk(SENTINEL))
    for name in ("secret.png", "secret", "secret.npy"):
        (root / name).write_bytes(buf.getvalue())
    with TestClient(create_app(Settings(storage_dir=root / "images"))) as client:
        image_id = client.post("/api/images", files={"file": ("a.png", png_bytes(np.full((28, 28), 99, np.uint8)))}
                               ).json()["image_id"]
        yield client, image_id, root


def _text_chunk(text: bytes):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("secret", text.decode())
    return info


# --- headers ----------------------------------------------------------------------------------------------

def test_every_answer_has_nosniff_and_no_referrer(secured) -> None:
    client, image_id, _ = secured
    for path in ("/", "/api/health", "/api/models", "/api/nope", f"/api/images/{image_id}",
                 f"/api/models/lenet5/images/{image_id}/input.npy", "/static/js/app.js", "/static/missing.js",
                 "/api/models/nope/images/x/predictions"):
        response = client.get(path)
        assert response.headers.get("x-content-type-options") == "nosniff", path
        assert response.headers.get("referrer-policy") == "no-referrer", path
        assert response.headers.get("x-frame-options") == "DENY", path
    upload = client.post("/api/images", content=b"not an image", headers={"content-type": "image/png"})
    assert upload.status_code == 415 and upload.headers["x-content-type-options"] == "nosniff"


def test_page_csp_forbids_inline_script_and_framing(secured) -> None:
    client, _, _ = secured
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert policy == CONTENT_SECURITY_POLICY
    directives = {d.split()[0]: d.split()[1:] for d in policy.split("; ")}
    assert directives["script-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["base-uri"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
    # The page itself needs no exception: every script is an external module, no handlers, no style="".
    html = response.text
    scripts = re.findall(r"<script\b[^>]*>", html, flags=re.I)
    assert scripts and all("src=" in tag for tag in scripts), scripts
    assert not re.search(r"<script\b[^>]*>\s*[^<\s]", html, flags=re.I)  # no script body
    assert not re.search(r"\son[a-z]+\s*=", html, flags=re.I)
    assert not re.search(r"\sstyle\s*=", html, flags=re.I)


def test_served_files_have_fixed_content_types(secured) -> None:
    client, image_id, _ = secured
    expected = {
        f"/api/images/{image_id}": "image/png",
        f"/api/models/lenet5/images/{image_id}/input.png": "image/png",
        f"/api/models/lenet5/images/{image_id}/input.npy": "application/octet-stream",
        "/api/models/lenet5/layers/features.0/weights.npy": "application/octet-stream",
        "/api/samples/shapes-test-0.png": "image/png",
        "/api/health": "application/json",
    }
    for path, content_type in expected.items():
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"] == content_type, path
        assert response.headers["x-content-type-options"] == "nosniff"
    # An uploaded SVG or HTML never comes back as markup: it is refused, and what is stored is re-encoded PNG.
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    assert client.post("/api/images", files={"file": ("x.svg", svg, "image/svg+xml")}).status_code == 415


# --- request bodies of JSON endpoints are bounded too ------------------------------------------------------

def test_json_bodies_over_the_limit_are_refused_while_streaming(tmp_path: Path) -> None:
    from tests.test_hostile_uploads import CountingBody, asgi_post

    app = create_app(Settings(storage_dir=tmp_path / "images", max_body_bytes=4096))
    with TestClient(app) as client:
        json_type = [(b"content-type", b"application/json")]
        chunked = CountingBody(b'{"input": [', b"[1, 2, 3, 4, 5, 6, 7, 8]," * 40, 10_000, b"[1]]}")
        status, content = anyio.run(asgi_post, app, json_type, chunked, "/api/sandbox/convolve")
        assert status == 413 and b'"payload_too_large"' in content
        assert chunked.bytes_pulled() < 4096 + 2 * 1024 and chunked.pulled < 10
        declared = CountingBody(b"{}", b"", 0)
        status, content = anyio.run(asgi_post, app, json_type + [(b"content-length", b"999999")], declared,
                                    "/api/sandbox/convolve")
        assert status == 413 and declared.pulled == 0
        status, content = anyio.run(asgi_post, app, json_type + [(b"content-length", b"12x")], CountingBody(b"{}", b"", 0),
                                    "/api/sandbox/convolve")
        assert status == 400 and b'"bad_content_length"' in content
        small = client.post("/api/sandbox/convolve", json={"input": [[1, 2], [3, 4]], "kernel": [[1]]})
        assert small.status_code == 200


# --- CORS -------------------------------------------------------------------------------------------------

def test_cors_is_closed_by_default(secured) -> None:
    client, _, _ = secured
    simple = client.get("/api/models", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in simple.headers
    preflight = client.options("/api/images", headers={"Origin": "http://evil.example",
                                                       "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
    assert preflight.status_code in (404, 405)


def test_cors_opens_only_to_configured_origins(tmp_path: Path) -> None:
    settings = Settings(storage_dir=tmp_path / "images", cors_origins=["http://lecture.example"])
    with TestClient(create_app(settings)) as client:
        ok = client.get("/api/health", headers={"Origin": "http://lecture.example"})
        assert ok.headers["access-control-allow-origin"] == "http://lecture.example"
        other = client.get("/api/health", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        preflight = client.options("/api/images", headers={"Origin": "http://lecture.example",
                                                           "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://lecture.example"


# --- path parameters cannot leave their store --------------------------------------------------------------

TRAVERSALS = [
    "..", "../secret", "../secret.png", "../../../../etc/passwd", "..%2Fsecret", "..%2fsecret.png",
    "%2e%2e%2fsecret", "%2E%2E%2Fsecret.png", "%252e%252e%252fsecret", "..%5Csecret", "..\\secret",
    "....//secret", "%2e%2e", "/etc/passwd", "%2Fetc%2Fpasswd", "secret%00.png", "..%00", "%c0%ae%c0%ae%2fsecret",
    "~/secret", "images/../../secret.png",
]
VALID = {"model": "lenet5", "layer": "features.0", "channel": "0", "sample_id": "shapes-test-0"}


def _asgi_get(app: FastAPI, raw_path: str) -> tuple[int, dict[str, str], bytes]:
    """A GET exactly as uvicorn would deliver it: ``path`` percent-decoded once, ``raw_path`` as sent."""
    path_part, _, query = raw_path.partition("?")
    messages: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        messages.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": urllib.parse.unquote(path_part), "raw_path": path_part.encode("latin-1"),
             "query_string": query.encode("latin-1"), "root_path": "", "headers": [(b"host", b"test")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "app": app}
    anyio.run(app, scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")


def _get_paths(app: FastAPI) -> list[tuple[str, list[str]]]:
    """Every GET path template in the OpenAPI schema with its path parameters."""
    found = []
    for template, operations in app.openapi()["paths"].items():
        if "get" in operations:
            names = [p["name"] for p in operations["get"].get("parameters", []) if p["in"] == "path"]
            if names:
                found.append((template, names))
    return found


def test_no_path_parameter_reaches_outside_its_store(secured) -> None:
    client, image_id, _ = secured
    app = client.app
    paths = _get_paths(app)
    assert len(paths) >= 8
    valid = {**VALID, "image_id": image_id}
    checked = 0
    for template, names in paths:
        for param in names:
            for payload in TRAVERSALS:
                values = {name: valid.get(name, "0") for name in names}
                values[param] = payload
                raw = template
                for name, value in values.items():
                    raw = raw.replace("{" + name + "}", value)
                status, headers, body = _asgi_get(app, raw)
                checked += 1
                assert status < 500, (raw, status, body[:200])
                assert SENTINEL not in body, raw
                assert b"root:" not in body, raw
                if status != 200:
                    assert headers.get("content-type", "").startswith("application/json"), raw
    assert checked >= len(paths) * len(TRAVERSALS)


def test_static_files_cannot_be_escaped(secured) -> None:
    client, _, _ = secured
    for raw in ("/static/..%2F..%2Fserver%2Fmain.py", "/static/%2e%2e/%2e%2e/server/main.py",
                "/static/../templates/index.html", "/static/..%5c..%5cserver%5cmain.py",
                "/static/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd"):
        status, _, body = _asgi_get(client.app, raw)
        assert status in (400, 404), (raw, status)
        assert b"create_app" not in body and b"root:" not in body


def test_image_store_only_accepts_sha256_names(secured) -> None:
    client, image_id, root = secured
    store = client.app.state.image_store  # type: ignore[attr-defined]
    from server.errors import ApiError

    for bad in ("../secret", "../" + image_id, image_id.upper(), image_id + "/", image_id[:-1] + "g", "", "."):
        with pytest.raises(ApiError) as info:
            store.open_image(bad)
        assert info.value.status == 404
    assert sorted(p.parent for p in root.rglob("*.png") if p.name != "secret.png") == [store.root]

