"""Classroom sessions over HTTP (TestClient): every rule of the API except the event stream (see
test_session_events.py, which needs a real server)."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from server.main import create_app
from server.services.classroom.codes import CODE_ALPHABET
from server.settings import Settings
from tests.classroom_support import same_predictions
from tests.conftest import png_bytes

AMBIGUOUS = set("0O1lI")


@pytest.fixture
def small(tmp_path) -> Iterator[TestClient]:
    """An app with small caps, so that each one can be reached."""
    settings = Settings(storage_dir=tmp_path / "images", max_sessions=3, max_submissions_per_session=4,
                        max_submissions_per_student=2, max_session_state_bytes=512)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def start(client: TestClient, **body) -> tuple[str, dict[str, str]]:
    response = client.post("/api/sessions", json=body or None)
    assert response.status_code == 201, response.text
    data = response.json()
    return data["code"], {"Authorization": f"Bearer {data['teacher_token']}"}


def digit(value: int) -> bytes:
    rng = np.random.default_rng(value)
    return png_bytes((rng.random((28, 28)) * 255).astype(np.uint8))


def test_create_answers_201_with_code_token_and_join_url(tmp_path) -> None:
    with TestClient(create_app(Settings(storage_dir=tmp_path / "images", max_sessions_per_address=0))) as client:
        check_create(client)


def check_create(client: TestClient) -> None:
    response = client.post("/api/sessions")
    assert response.status_code == 201
    data = response.json()
    assert set(data) >= {"code", "teacher_token", "join_url"}
    code = data["code"]
    assert 4 <= len(code) <= 8 and set(code) <= set(CODE_ALPHABET) and not set(code) & AMBIGUOUS
    # ≥ 128 bits: url-safe base64 carries 6 bits a character
    assert len(data["teacher_token"]) * 6 >= 128
    assert data["join_url"] == f"http://testserver/join/{code}"
    codes = {client.post("/api/sessions").json()["code"] for _ in range(20)}
    assert len(codes) == 20
    assert not AMBIGUOUS & set(CODE_ALPHABET)


def test_info_shows_state_and_counts_and_codes_are_case_insensitive(client: TestClient) -> None:
    code, teacher = start(client, state={"model": "lenet5", "view": "layers"})
    info = client.get(f"/api/sessions/{code.lower()}").json()
    assert info["code"] == code
    assert info["state"] == {"model": "lenet5", "view": "layers"}
    assert info["followers"] == 0 and info["submissions"] == 0
    assert client.get("/api/sessions/ZZZZZZ").status_code == 404
    assert client.get("/api/sessions/not-a-code").json()["error"]["code"] == "unknown_session"


def test_put_state_needs_the_teacher_token(client: TestClient) -> None:
    code, teacher = start(client)
    other_code, other_teacher = start(client)
    body = {"state": {"model": "lenet5", "image": "a" * 64, "view": "stepper", "step": "12"}}
    missing = client.put(f"/api/sessions/{code}/state", json=body)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_token"
    assert client.put(f"/api/sessions/{code}/state", json=body,
                      headers={"Authorization": "Basic abc"}).status_code == 401
    wrong = client.put(f"/api/sessions/{code}/state", json=body, headers=other_teacher)
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "wrong_token"
    assert client.put(f"/api/sessions/{code}/state", json=body,
                      headers={"Authorization": "Bearer nope"}).status_code == 403
    ok = client.put(f"/api/sessions/{code}/state", json=body, headers=teacher)
    assert ok.status_code == 200 and ok.json()["version"] == 1
    assert client.get(f"/api/sessions/{code}").json()["state"] == body["state"]
    assert client.get(f"/api/sessions/{other_code}").json()["state"] == {}


@pytest.mark.parametrize(("body", "status"), [
    ({"state": {"model": 5}}, 422),  # values are strings, as in a URL
    ({"state": {"bad key!": "x"}}, 422),
    ({"state": {"model": "a\u0000b"}}, 422),
    ({"state": ["model", "lenet5"]}, 422),
    ({"state": "model=lenet5"}, 422),
    ({}, 422),
    ({"state": {"k": "x" * 600}}, 413),  # over this app's 512-byte state limit
    ({"state": {f"k{i}": "1" for i in range(65)}}, 413),
])
def test_malformed_or_oversized_state_is_refused(small: TestClient, body: dict, status: int) -> None:
    code, teacher = start(small)
    response = small.put(f"/api/sessions/{code}/state", json=body, headers=teacher)
    assert response.status_code == status, response.text
    assert set(response.json()["error"]) == {"code", "message"}
    assert small.get(f"/api/sessions/{code}").json()["state"] == {}


def test_not_json_body_is_a_clear_4xx(client: TestClient) -> None:
    code, teacher = start(client)
    response = client.put(f"/api/sessions/{code}/state", content=b"{not json",
                          headers={**teacher, "Content-Type": "application/json"})
    assert response.status_code == 422 and "error" in response.json()


def test_session_cap_answers_429(small: TestClient) -> None:
    for _ in range(3):
        start(small)
    response = small.post("/api/sessions")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "too_many_sessions" and response.headers["Retry-After"]


def test_sessions_per_address_are_capped(tmp_path) -> None:
    settings = Settings(storage_dir=tmp_path / "images", max_sessions_per_address=2)
    with TestClient(create_app(settings)) as client:
        first, teacher = start(client)
        start(client)
        refused = client.post("/api/sessions")
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_sessions_here"
        assert refused.headers["Retry-After"]
        client.delete(f"/api/sessions/{first}", headers=teacher)
        start(client)  # ending one frees a place for this address


def test_closing_frees_a_place_and_ends_the_session(small: TestClient) -> None:
    codes = [start(small) for _ in range(3)]
    code, teacher = codes[0]
    assert small.delete(f"/api/sessions/{code}").status_code == 401
    assert small.delete(f"/api/sessions/{code}", headers=codes[1][1]).status_code == 403
    assert small.delete(f"/api/sessions/{code}", headers=teacher).json() == {"code": code, "closed": True}
    assert small.get(f"/api/sessions/{code}").status_code == 404
    start(small)  # the place is free again


def test_submissions_predictions_match_the_prediction_api(client: TestClient, upload) -> None:
    code, teacher = start(client, state={"model": "lenet5", "weights": "auto"})
    ids = [upload(client, digit(i)) for i in range(3)]
    for i, image_id in enumerate(ids):
        response = client.post(f"/api/sessions/{code}/submissions", json={"image_id": image_id, "name": f"S{i}"},
                               headers={"X-ConvScope-Student": f"student-{i:04d}"})
        assert response.status_code == 201, response.text
        assert response.json()["image_id"] == image_id and response.json()["name"] == f"S{i}"
    assert client.get(f"/api/sessions/{code}").json()["submissions"] == 3
    wall = client.get(f"/api/sessions/{code}/submissions", headers=teacher)
    assert wall.status_code == 200
    data = wall.json()
    assert data["model"] == "lenet5" and data["weights_used"] in ("trained", "untrained")
    assert [s["image_id"] for s in data["submissions"]] == ids
    for item in data["submissions"]:
        reference = client.get(f"/api/models/lenet5/images/{item['image_id']}/predictions?top_k=3").json()
        assert same_predictions(item["predictions"], reference["predictions"])
        assert item["prediction"] == item["predictions"][0]
    # the wall follows the session's current model
    client.put(f"/api/sessions/{code}/state", json={"state": {"model": "mnist-shallow"}}, headers=teacher)
    other = client.get(f"/api/sessions/{code}/submissions", headers=teacher).json()
    assert other["model"] == "mnist-shallow"
    reference = client.get(f"/api/models/mnist-shallow/images/{ids[0]}/predictions?top_k=3").json()
    assert same_predictions(other["submissions"][0]["predictions"], reference["predictions"])


def test_wall_needs_the_teacher_token_and_clear_empties_it(client: TestClient, upload) -> None:
    code, teacher = start(client)
    image_id = upload(client, digit(7))
    client.post(f"/api/sessions/{code}/submissions", json={"image_id": image_id})
    assert client.get(f"/api/sessions/{code}/submissions").status_code == 401
    assert client.get(f"/api/sessions/{code}/submissions",
                      headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert client.delete(f"/api/sessions/{code}/submissions").status_code == 401
    assert client.delete(f"/api/sessions/{code}/submissions", headers={"Authorization": "Bearer x"}).status_code == 403
    assert client.delete(f"/api/sessions/{code}/submissions", headers=teacher).status_code == 200
    assert client.get(f"/api/sessions/{code}/submissions", headers=teacher).json()["submissions"] == []
    assert client.get(f"/api/sessions/{code}").json()["submissions"] == 0


def test_submission_caps_per_student_and_per_session(small: TestClient, upload) -> None:
    code, teacher = start(small)
    image_id = upload(small, digit(1))

    def send(student: str):
        return small.post(f"/api/sessions/{code}/submissions", json={"image_id": image_id},
                          headers={"X-ConvScope-Student": student})

    assert send("alice-123").status_code == 201
    assert send("alice-123").status_code == 201
    refused = send("alice-123")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_submissions"
    assert refused.headers["Retry-After"]
    assert send("bobby-456").status_code == 201
    assert send("carol-789").status_code == 201
    full = send("dave-0000")  # four on the wall: the session's cap
    assert full.status_code == 429 and full.json()["error"]["code"] == "wall_full"
    small.delete(f"/api/sessions/{code}/submissions", headers=teacher)
    assert send("alice-123").status_code == 201  # clearing the wall resets every student's count


@pytest.mark.parametrize(("body", "status", "error"), [
    ({"image_id": "f" * 64}, 404, "unknown_image"),
    ({"image_id": "../../etc/passwd"}, 422, "invalid_image_id"),
    ({"image_id": 5}, 422, "validation_error"),
    ({}, 422, "validation_error"),
    ({"image_id": "IMAGE", "name": "x" * 41}, 422, None),
])
def test_bad_submissions_are_refused(client: TestClient, upload, body: dict, status: int, error: str | None) -> None:
    code, _ = start(client)
    if body.get("image_id") == "IMAGE":
        body = {**body, "image_id": upload(client, digit(2))}
    response = client.post(f"/api/sessions/{code}/submissions", json=body)
    assert response.status_code == status, response.text
    if error:
        assert response.json()["error"]["code"] == error
    assert client.post("/api/sessions/ZZZZZZ/submissions", json={"image_id": "f" * 64}).status_code == 404


def test_names_are_plain_bounded_text(client: TestClient, upload) -> None:
    code, teacher = start(client)
    image_id = upload(client, digit(3))
    hostile = '<img src=x onerror="alert(1)">\u202e\u0007  Ada\n\tL.'
    response = client.post(f"/api/sessions/{code}/submissions", json={"image_id": image_id, "name": hostile})
    assert response.status_code == 201
    name = response.json()["name"]
    # kept as text (the page shows it with textContent), without control or bidi-override characters
    assert name == '<img src=x onerror="alert(1)"> Ada L.'
    wall = client.get(f"/api/sessions/{code}/submissions", headers=teacher).json()
    assert wall["submissions"][0]["name"] == name
    assert response.headers["content-type"].startswith("application/json")


def test_idle_sessions_expire(tmp_path) -> None:
    settings = Settings(storage_dir=tmp_path / "images", session_idle_s=0.5)
    with TestClient(create_app(settings)) as client:
        code, teacher = start(client)
        deadline = time.monotonic() + 10
        while client.get(f"/api/sessions/{code}").status_code == 200:
            assert time.monotonic() < deadline, "the idle session never expired"
            time.sleep(0.1)
        assert client.put(f"/api/sessions/{code}/state", json={"state": {}}, headers=teacher).status_code == 404


def test_teacher_requests_keep_a_session_alive(tmp_path) -> None:
    # 3 s of idle time: room for a slow request on a busy machine between two of the teacher's
    settings = Settings(storage_dir=tmp_path / "images", session_idle_s=3.0)
    with TestClient(create_app(settings)) as client:
        code, teacher = start(client)
        other, _ = start(client)
        deadline = time.monotonic() + 30
        while client.get(f"/api/sessions/{other}").status_code == 200:  # the untouched one expires…
            assert time.monotonic() < deadline
            assert client.get(f"/api/sessions/{code}", headers=teacher).status_code == 200  # …this one not
            time.sleep(0.1)
        assert client.get(f"/api/sessions/{code}").status_code == 200


def test_qr_code_decodes_to_the_join_url(client: TestClient) -> None:
    zxingcpp = pytest.importorskip("zxingcpp")
    from PIL import Image

    response = client.post("/api/sessions")
    data = response.json()
    qr = client.get(f"/api/sessions/{data['code']}/qr.png")
    assert qr.status_code == 200 and qr.headers["content-type"] == "image/png"
    decoded = zxingcpp.read_barcodes(Image.open(io.BytesIO(qr.content)))
    assert [d.text for d in decoded] == [data["join_url"]]
    assert client.get("/api/sessions/ZZZZZZ/qr.png").status_code == 404


def test_join_url_redirects_to_the_page(client: TestClient) -> None:
    code, _ = start(client)
    response = client.get(f"/join/{code.lower()}", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/?session={code}"
    assert client.get("/join/<script>", follow_redirects=False).status_code == 404


def test_public_url_setting_names_the_join_address(tmp_path) -> None:
    settings = Settings(storage_dir=tmp_path / "images", public_url="https://class.example.org/")
    with TestClient(create_app(settings)) as client:
        data = client.post("/api/sessions").json()
        assert data["join_url"] == f"https://class.example.org/join/{data['code']}"
        assert "warning" not in data


def test_loopback_only_server_warns_the_teacher(client: TestClient) -> None:
    data = client.post("/api/sessions", headers={"Host": "localhost:8000"}).json()
    assert data["join_url"] == f"http://localhost:8000/join/{data['code']}"
    assert "--host 0.0.0.0" in data["warning"]
    lan = client.post("/api/sessions", headers={"Host": "192.168.1.20:8000"}).json()
    assert lan["join_url"] == f"http://192.168.1.20:8000/join/{lan['code']}" and "warning" not in lan
