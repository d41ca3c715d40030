"""The holes an attack on a real classroom server found (issue 21 §4), each checked against a real uvicorn:
malformed origins, forged X-Forwarded-For, foreign Host names on a LAN server, decoders outliving a killed
server, oversized live frames, guessable session codes, the upload's schema, the costly 1-bit picture."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from tests.conftest import png_bytes
from tests.harness import LiveServer, client_at, live_server, wait_until

pytestmark = pytest.mark.slow

DIGIT = png_bytes(np.full((28, 28), 200, np.uint8))


def raw_handshake(port: int, origin: str) -> bytes:
    """The server's answer to a WebSocket handshake for the live socket with this Origin."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall((f"GET /api/models/lenet5/live HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      f"Sec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n").encode())
        answer = b""
        while b"\r\n\r\n" not in answer or not (answer.startswith(b"HTTP/1.1 101") or answer.rstrip().endswith(b"}")):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


@pytest.fixture(scope="module")
def lan_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Bare uvicorn on every address (a classroom's --host 0.0.0.0), default settings."""
    with live_server(tmp_path_factory.mktemp("lan"), host="0.0.0.0") as server:
        yield server


MALFORMED_ORIGINS = ("http://localhost:{port}.evil.com", "http://127.0.0.1:99999", "http://127.0.0.1:abc",
                     "http://[::1", "http://127.0.0.1:-1")


def test_malformed_origins_are_refused_not_crashed_on(lan_server: LiveServer) -> None:
    """``Origin: http://localhost:8795.evil.com`` made urlsplit's port raise: 500. It is a foreign origin."""
    port = lan_server.port
    for template in MALFORMED_ORIGINS:
        origin = template.format(port=port)
        answer = httpx.post(lan_server.url + "/api/images", files={"file": ("a.png", DIGIT, "image/png")},
                            headers={"Origin": origin}, timeout=60)
        assert answer.status_code == 403, (origin, answer.status_code, answer.text[:200])
        assert answer.json()["error"]["code"] == "foreign_origin"
        handshake = raw_handshake(port, origin)
        assert handshake.startswith(b"HTTP/1.1 403") and b'"foreign_origin"' in handshake, (origin, handshake[:200])


def test_forwarded_for_from_loopback_is_not_believed_by_default(lan_server: LiveServer) -> None:
    """uvicorn believes X-Forwarded-For from 127.0.0.1 by default: one machine made 50 sessions past the
    per-address cap of 5. Without CONVSCOPE_FORWARDED_ALLOW_IPS the header changes nothing."""
    with client_at("127.0.0.1", lan_server.url) as http:
        answers = [http.post("/api/sessions", json={}, headers={"X-Forwarded-For": f"203.0.113.{i}"})
                   for i in range(8)]
        codes = [answer.status_code for answer in answers]
        assert codes[:5] == [201] * 5 and codes[5:] == [429] * 3, codes
        assert answers[5].json()["error"]["code"] == "too_many_sessions_here"
        for answer in answers[:5]:
            token = answer.json()["teacher_token"]
            http.delete(f"/api/sessions/{answer.json()['code']}", headers={"Authorization": f"Bearer {token}"})


def test_a_lan_server_answers_only_to_its_own_names(lan_server: LiveServer) -> None:
    """DNS rebinding on a classroom LAN: a page whose name points at the server's address sends that name
    as Host. Measured before: 201 for a session created that way."""
    ours = sorted(entry.address for entries in psutil.net_if_addrs().values() for entry in entries
                  if entry.family == socket.AF_INET and not entry.address.startswith("127."))
    if not ours:
        pytest.skip("this machine has no non-loopback IPv4 address to reach the server on")
    address, port = ours[0], lan_server.port
    base = f"http://{address}:{port}"
    foreign = httpx.post(base + "/api/sessions", json={}, timeout=60,
                         headers={"Host": f"rebind.evil.example:{port}", "Origin": f"http://rebind.evil.example:{port}"})
    assert foreign.status_code == 400, foreign.text
    error = foreign.json()["error"]
    assert error["code"] == "invalid_host" and "CONVSCOPE_ALLOWED_HOSTS" in error["message"]
    # The machine's own address and names are answered, and the join URL printed for the class works.
    hostname = socket.gethostname().split(".")[0].lower()
    for host in (f"{address}:{port}", f"{hostname}.local:{port}", f"localhost:{port}"):
        assert httpx.get(base + "/api/health", headers={"Host": host}, timeout=60).status_code == 200, host
    created = httpx.post(base + "/api/sessions", json={}, timeout=60)
    assert created.status_code == 201, created.text
    session = created.json()
    join = httpx.get(session["join_url"], timeout=60, follow_redirects=False)
    assert join.status_code == 303, (session["join_url"], join.text)
    qr = httpx.get(f"{base}/api/sessions/{session['code']}/qr.png", timeout=60)
    assert qr.status_code == 200 and qr.content.startswith(b"\x89PNG")
    httpx.delete(f"{base}/api/sessions/{session['code']}", headers={"Authorization": f"Bearer {session['teacher_token']}"},
                 timeout=60)


def test_guessing_session_codes_is_rate_limited_per_address(lan_server: LiveServer) -> None:
    """395 lookups/s found codes by brute force. After 20 misses in a minute an address gets 429 +
    Retry-After, on every endpoint that tells a live code from a dead one; other addresses are not affected."""
    with client_at("127.0.0.5", lan_server.url) as guesser, client_at("127.0.0.6", lan_server.url) as other:
        endpoints = ("GET /api/sessions/{c}", "GET /api/sessions/{c}/qr.png", "DELETE /api/sessions/{c}",
                     "POST /api/sessions/{c}/submissions", "GET /api/sessions/{c}/events")
        statuses = []
        for i in range(25):
            method, path = endpoints[i % len(endpoints)].split(" ")
            code = f"ZZZ{i:03d}".replace("0", "A").replace("1", "B")
            body = {"json": {"image_id": "a" * 64}} if method == "POST" else {}
            statuses.append(guesser.request(method, path.format(c=code), **body).status_code)
        assert statuses[:20] == [404] * 20 and statuses[20:] == [429] * 5, statuses
        refused = guesser.get("/api/sessions/KKKKKK")
        assert refused.json()["error"]["code"] == "too_many_failed_lookups"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert other.get("/api/sessions/KKKKKK").status_code == 404


def test_forwarded_for_is_believed_from_a_configured_proxy(tmp_path: Path) -> None:
    """With CONVSCOPE_FORWARDED_ALLOW_IPS naming the proxy (the scale-out deployment's nginx), each
    student's X-Forwarded-For is their own address for per-address caps; from any other peer it is not."""
    with live_server(tmp_path, {"CONVSCOPE_FORWARDED_ALLOW_IPS": "127.0.0.1"}) as server:
        with client_at("127.0.0.1", server.url) as proxy:
            codes = [proxy.post("/api/sessions", json={}, headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
                     for i in range(7)]
            assert codes == [201] * 7, codes
            same = [proxy.post("/api/sessions", json={}, headers={"X-Forwarded-For": "198.51.100.1"}).status_code
                    for _ in range(6)]
            assert same == [201] * 5 + [429], same
        with client_at("127.0.0.7", server.url) as stranger:
            codes = [stranger.post("/api/sessions", json={}, headers={"X-Forwarded-For": f"192.0.2.{i}"}).status_code
                     for i in range(6)]
            assert codes == [201] * 5 + [429], codes


def test_convscope_serve_keeps_a_live_socket_open_after_a_frame_over_16_mib(tmp_path: Path) -> None:
    """uvicorn's WebSocket cap (16 MiB) closed the socket with 1009 before the app could answer; the
    documented answer to an oversized frame is a 413 message on a socket that stays open. Also: convscope
    serve gives uvicorn no proxy trust (X-Forwarded-For from loopback is not believed)."""
    from websockets.sync.client import connect

    with live_server(tmp_path, cli=True) as server:
        with connect(f"ws://127.0.0.1:{server.port}/api/models/lenet5/live", open_timeout=60,
                     max_size=2**22) as ws:
            assert "ready" in json.loads(ws.recv(timeout=60))
            ws.send(b"\x89PNG" + bytes(17 * 2**20))
            refusal = json.loads(ws.recv(timeout=60))
            assert refusal["error"]["status"] == 413 and refusal["error"]["code"] == "frame_too_large", refusal
            ws.send(DIGIT)  # the socket is still open: the next frame is computed
            answer = json.loads(ws.recv(timeout=60))
            assert answer.get("predictions"), answer
        with client_at("127.0.0.1", server.url) as http:
            codes = [http.post("/api/sessions", json={}, headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
                     for i in range(6)]
            assert codes == [201] * 5 + [429], codes


def _decode_children(pid: int) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if any("decode_worker" in part for part in child.cmdline()):
                found.append(child)
        except psutil.Error:  # a finished decode not reaped yet, or gone meanwhile
            pass
    return found


def _waiting_on_its_pipe(process: psutil.Process) -> bool:
    """Started and idle: blocked reading the upload from its stdin pipe."""
    try:
        return "pipe" in Path(f"/proc/{process.pid}/wchan").read_text()
    except OSError:
        return False


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.skipif(not Path("/proc/self/wchan").exists(), reason="needs Linux /proc")
def test_decode_children_die_with_a_killed_server(tmp_path: Path) -> None:
    """kill -9 of the server left 5 decoders running. Each decoder, once started, is frozen here (SIGSTOP: it
    can no longer notice a closed pipe by itself), and uploads are handed to the frozen ones, so they hold
    work in flight; when the server is killed, every one of them dies with it."""
    with live_server(tmp_path) as server:
        url = server.url + "/api/images"
        frozen: dict[int, psutil.Process] = {}
        uploads: list[object] = []
        import concurrent.futures

        pool = concurrent.futures.ThreadPoolExecutor(4)
        try:
            def four_frozen() -> bool:
                for child in _decode_children(server.pid):
                    if child.pid not in frozen and _waiting_on_its_pipe(child):
                        child.send_signal(signal.SIGSTOP)
                        frozen[child.pid] = child
                if len(uploads) < len(frozen) + 1 and len(uploads) < 4:  # each upload takes a decoder
                    data = png_bytes(np.full((28, 28), len(uploads), np.uint8))
                    uploads.append(pool.submit(httpx.post, url, files={"file": ("a.png", data)}, timeout=120))
                return len(frozen) >= 4

            wait_until(four_frozen, timeout=90, what="4 decoders started and frozen", poll_s=0.02)
            os.kill(server.pid, signal.SIGKILL)
            children = list(frozen.values())
            try:
                wait_until(lambda: all(_gone(child) for child in children), timeout=10,
                           what="the decoders to die with the killed server", poll_s=0.05)
            except AssertionError:
                alive = [child.pid for child in children if not _gone(child)]
                for pid in alive:
                    os.kill(pid, signal.SIGKILL)
                pytest.fail(f"decode processes {alive} outlived the killed server")
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def test_the_upload_schema_states_what_the_server_enforces(lan_server: LiveServer) -> None:
    """A schema-valid multipart body with extra parts got 400 "more than 8 parts": the schema now says what the
    server takes, one part named `file`, and the server refuses any other part, few or many."""
    schema = httpx.get(lan_server.url + "/openapi.json", timeout=60).json()
    multipart = schema["paths"]["/api/images"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert multipart["additionalProperties"] is False and multipart["required"] == ["file"]
    for extra in (1, 8):
        files = [("file", ("a.png", DIGIT, "image/png"))] + [(f"x{i}", (None, "1")) for i in range(extra)]
        refused = httpx.post(lan_server.url + "/api/images", files=files, timeout=60)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "malformed_multipart"


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    (Image.fromarray(array).convert(mode) if mode else Image.fromarray(array)).save(buf, format="PNG")
    return buf.getvalue()


def test_costly_pictures_are_judged_by_their_decoding_work(lan_server: LiveServer) -> None:
    """49 MP passed the 50 MP limit whatever it cost: a 160 KB RGB PNG of 7000×7000 took over a second of
    CPU. Decodes are judged by the bytes they write; the 1-bit 7000×7000 picture is decoded as grey (cheap)
    and still accepted, with the right pixels."""
    side = 7000
    ramp = np.tile(np.linspace(0, 255, side, dtype=np.uint8), (side, 1))
    rgb = _png(np.stack([ramp, ramp.T, ramp[::-1]], -1))
    refused = httpx.post(lan_server.url + "/api/images", files={"file": ("big.png", rgb)}, timeout=120)
    assert refused.status_code == 413 and refused.json()["error"]["code"] == "image_too_large", refused.text
    checker = ((np.indices((side, side)).sum(axis=0) // 500) % 2 * 255).astype(np.uint8)
    one_bit = _png(checker, "1")
    stored = httpx.post(lan_server.url + "/api/images", files={"file": ("bits.png", one_bit)}, timeout=120)
    assert stored.status_code == 201, stored.text
    picture = httpx.get(f"{lan_server.url}/api/images/{stored.json()['image_id']}", timeout=60)
    pixels = np.asarray(Image.open(io.BytesIO(picture.content)).convert("L"), dtype=np.float64)
    reference = np.asarray(Image.fromarray(checker).resize(pixels.shape[::-1], Image.LANCZOS), dtype=np.float64)
    assert pixels.shape == (2048, 2048) and np.abs(pixels - reference).mean() < 2.0
