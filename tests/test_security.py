"""Security: headers on every answer (nosniff, CSP without inline script, no referrer), CORS closed unless
configured, fixed content types for served files, and no path parameter reaching outside its store —
including encoded and double-encoded ``../``. The page itself is checked to run under its CSP."""

from __future__ import annotations

import io
import re
import socket
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
from server.middleware.security import CONTENT_SECURITY_POLICY
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
    from tests.harness import CountingBody, asgi_post

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



# --- Host names (DNS rebinding), foreign origins, protocol-level errors (issue 10) -------------------------

def _asgi_call(app: FastAPI, method: str, path: str, headers: list[tuple[bytes, bytes]],
               server: tuple[str, int] = ("127.0.0.1", 8000), body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    messages: list[dict] = []
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await anyio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        messages.append(message)

    path_part, _, query = path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path_part, "raw_path": path_part.encode(), "query_string": query.encode(), "root_path": "",
             "headers": headers, "client": ("127.0.0.1", 5), "server": server, "app": app}

    async def run() -> None:
        with anyio.fail_after(30):
            await app(scope, receive, send)

    anyio.run(run)
    start = next(m for m in messages if m["type"] == "http.response.start")
    head = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return start["status"], head, b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")


def test_on_loopback_only_loopback_host_names_are_answered(secured) -> None:
    """DNS rebinding: a page on evil.example re-points its name to 127.0.0.1 and reads the laptop's server.
    A connection that came in on a loopback address is answered only under a loopback name."""
    client, _, _ = secured
    app = client.app
    for host in (b"localhost:8000", b"127.0.0.1:8000", b"[::1]:8000", b"LOCALHOST", b"127.0.0.1"):
        status, _, body = _asgi_call(app, "GET", "/api/health", [(b"host", host)])
        assert status == 200, (host, body)
    for host in (b"evil.example", b"evil.example:8000", b"127.0.0.1.nip.io:8000", b"localhost.evil.example"):
        status, headers, body = _asgi_call(app, "GET", "/api/health", [(b"host", host)])
        assert status == 400, host
        assert headers["content-type"] == "application/json" and b'"invalid_host"' in body
    # Arriving on a LAN address (a classroom using --host 0.0.0.0): this machine's names and that address
    # are answered, a name the machine does not have is not (issue 21: rebinding works on a LAN too).
    mdns = f"{socket.gethostname().split('.')[0].lower()}.local:8000".encode()
    for host in (mdns, b"192.168.1.20:8000", b"localhost:8000"):
        status, _, _ = _asgi_call(app, "GET", "/api/health", [(b"host", host)], server=("192.168.1.20", 8000))
        assert status == 200, host
    status, _, body = _asgi_call(app, "GET", "/api/health", [(b"host", b"teacher-laptop.evil.example:8000")],
                                 server=("192.168.1.20", 8000))
    assert status == 400 and b"CONVSCOPE_ALLOWED_HOSTS" in body


def test_an_allow_list_adds_names_to_the_machines_own(tmp_path: Path) -> None:
    settings = Settings(storage_dir=tmp_path / "images", allowed_hosts=["lecture.example", "*.school.example"],
                        public_url="https://convscope.district.example")
    with TestClient(create_app(settings), base_url="http://lecture.example:8000") as client:
        assert client.get("/api/health").status_code == 200
        for host in (b"a.b.school.example", b"convscope.district.example", b"localhost"):
            status, _, _ = _asgi_call(client.app, "GET", "/api/health", [(b"host", host)],
                                      server=("10.1.2.3", 8000))
            assert status == 200, host
        status, _, _ = _asgi_call(client.app, "GET", "/api/health", [(b"host", b"other.example")],
                                  server=("10.1.2.3", 8000))
        assert status == 400
    anywhere = Settings(storage_dir=tmp_path / "images", allowed_hosts=["*"])
    with TestClient(create_app(anywhere)) as client:
        status, _, _ = _asgi_call(client.app, "GET", "/api/health", [(b"host", b"whatever.example")])
        assert status == 200


def test_a_cross_origin_upload_is_refused_unless_cors_allows_it(tmp_path: Path) -> None:
    png = png_bytes(np.full((28, 28), 7, np.uint8))
    settings = Settings(storage_dir=tmp_path / "images", cors_origins=["http://lecture.example"])
    with TestClient(create_app(settings)) as client:
        for origin in ("http://evil.example", "null", "http://testserver:8080", "http://testserver.evil.example",
                       "file://", "garbage"):
            refused = client.post("/api/images", files={"file": ("a.png", png, "image/png")},
                                  headers={"Origin": origin})
            assert refused.status_code == 403, origin
            assert refused.json()["error"]["code"] == "foreign_origin"
            sandbox = client.post("/api/sandbox/convolve", json={"input": [[1, 2], [3, 4]], "kernel": [[1]]},
                                  headers={"Origin": origin})
            assert sandbox.status_code == 403
        assert list((tmp_path / "images").glob("*.png")) == []  # nothing was stored
        for origin in ("http://testserver", "http://lecture.example", None):
            headers = {"Origin": origin} if origin else {}
            ok = client.post("/api/images", files={"file": ("a.png", png, "image/png")}, headers=headers)
            assert ok.status_code == 201, (origin, ok.text)
        # Reading stays open to any page (CORS decides whether the browser lets it see the answer).
        assert client.get("/api/health", headers={"Origin": "http://evil.example"}).status_code == 200


def test_refused_cors_preflights_are_json_errors(tmp_path: Path) -> None:
    settings = Settings(storage_dir=tmp_path / "images", cors_origins=["http://lecture.example"])
    with TestClient(create_app(settings)) as client:
        refused = client.options("/api/images", headers={"Origin": "http://evil.example",
                                                         "Access-Control-Request-Method": "POST"})
        assert refused.status_code == 400 and refused.headers["content-type"] == "application/json"
        assert refused.json()["error"]["code"] == "cors_refused"
        assert "access-control-allow-origin" not in refused.headers
        method = client.options("/api/images", headers={"Origin": "http://lecture.example",
                                                        "Access-Control-Request-Method": "DELETE"})
        assert method.status_code == 400 and method.json()["error"]["code"] == "cors_refused"


def test_head_works_wherever_get_does(secured) -> None:
    client, image_id, _ = secured
    for path in ("/api/health", "/api/models", f"/api/images/{image_id}", "/api/samples/shapes-test-0.png",
                 "/static/js/app.js", "/"):
        get = client.get(path)
        head = client.head(path)
        assert head.status_code == get.status_code == 200, path
        assert head.content == b""
        assert head.headers["content-type"] == get.headers["content-type"]
        assert head.headers.get("content-length") == str(len(get.content)), path
        assert head.headers.get("etag") == get.headers.get("etag")
    missing = client.head("/api/models/nope")
    assert missing.status_code == 404 and missing.content == b""


def test_protocol_errors_the_app_sees_are_json(secured) -> None:
    client, image_id, _ = secured
    long_url = client.get("/api/models?" + "x=1&" * 5000)
    assert long_url.status_code == 414 and long_url.json()["error"]["code"] == "uri_too_long"
    for path in ("/api/images", "/api/sandbox/convolve"):
        status, headers, body = _asgi_call(client.app, "POST", path, [(b"host", b"localhost"), (b"content-type", b"image/png"),
                                                                      (b"content-length", b"-5")])
        assert status == 400 and b'"bad_content_length"' in body and headers["content-type"] == "application/json"
    not_allowed = client.delete(f"/api/images/{image_id}")
    assert not_allowed.status_code == 405 and not_allowed.json()["error"]["code"] == "method_not_allowed"


def _stall(port: int, body_size: int, sent: int) -> socket.socket:
    """Headers of a ``body_size`` multipart upload and its first ``sent`` bytes, then nothing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    head = (f"POST /api/images HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: multipart/form-data; "
            f"boundary=zz\r\nContent-Length: {body_size}\r\n\r\n").encode()
    part = b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n\x89PNG\r\n\x1a\n'
    sock.sendall(head + (part + b"\x00" * sent)[:sent])
    return sock


def test_stalled_upload_bodies_free_their_slots(tmp_path: Path) -> None:
    """8 sockets send the headers and 100 bytes of a 1 MB upload and then nothing: before, they held all
    8 upload slots for as long as they stayed open and a real upload waited, then got 503. Now each is cut
    off with 408 after the idle timeout and a real upload goes through. (Also: a foreign Host on loopback.)"""
    import httpx

    from tests.harness import live_server

    env = {"CONVSCOPE_BODY_IDLE_TIMEOUT_S": "1.5", "CONVSCOPE_MAX_ACTIVE_UPLOADS": "8"}
    with live_server(tmp_path, env) as server:
        rebinding = httpx.get(server.url + "/api/health", headers={"Host": f"evil.example:{server.port}"})
        assert rebinding.status_code == 400 and rebinding.json()["error"]["code"] == "invalid_host"
        sockets = [_stall(server.port, 1024 * 1024, 100) for _ in range(8)]
        try:
            png = png_bytes(np.full((28, 28), 200, np.uint8))
            ok = httpx.post(server.url + "/api/images", files={"file": ("a.png", png, "image/png")}, timeout=60)
            assert ok.status_code == 201, ok.text
            for sock in sockets:
                answer = b""
                while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    answer += chunk
                assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
                assert b'"body_timeout"' in answer
        finally:
            for sock in sockets:
                sock.close()


def _handshake(port: int, origin: str | None, host: str | None = None) -> bytes:
    """A raw WebSocket handshake for the live socket; returns what the server answered to it."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        extra = f"Origin: {origin}\r\n" if origin else ""
        sock.sendall((f"GET /api/models/lenet5/live HTTP/1.1\r\nHost: {host or f'127.0.0.1:{port}'}\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      f"Sec-WebSocket-Version: 13\r\n{extra}\r\n").encode())
        answer = b""
        while b"\r\n\r\n" not in answer or (answer.startswith(b"HTTP/1.1 4") and not answer.rstrip().endswith(b"}")):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def test_live_socket_handshakes_from_other_origins_and_hosts_are_refused_over_a_real_socket(tmp_path: Path) -> None:
    """Browsers apply no CORS to WebSockets: a page elsewhere could open the live socket of a server on the
    student's laptop (and send it frames). The handshake meets the same origin and Host rules as HTTP, and
    the refusal is the API's JSON error."""
    from tests.harness import live_server

    with live_server(tmp_path) as server:
        foreign = _handshake(server.port, "http://evil.example")
        assert foreign.startswith(b"HTTP/1.1 403") and b'"foreign_origin"' in foreign, foreign[:300]
        assert b"application/json" in foreign.split(b"\r\n\r\n")[0].lower()
        rebinding = _handshake(server.port, f"http://evil.example:{server.port}", host=f"evil.example:{server.port}")
        assert rebinding.startswith(b"HTTP/1.1 400") and b'"invalid_host"' in rebinding, rebinding[:300]
        for origin in (f"http://127.0.0.1:{server.port}", None):
            assert _handshake(server.port, origin).startswith(b"HTTP/1.1 101"), origin
