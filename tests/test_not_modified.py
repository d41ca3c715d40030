"""Revalidation: a view fetched again with If-None-Match naming its ETag is answered 304 with no body
(server/middleware/not_modified.py::NotModifiedMiddleware), through the real app and at the ASGI level."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from fastapi.testclient import TestClient

from server.middleware.not_modified import NotModifiedMiddleware
from tests.conftest import load_npy, png_bytes


@pytest.fixture
def view(client: TestClient, upload) -> tuple[str, dict[str, str], bytes]:  # noqa: ANN001
    image_id = upload(client, png_bytes(np.random.default_rng(1).integers(0, 256, (28, 28), dtype=np.uint8)))
    url = f"/api/models/lenet5/images/{image_id}/layers/features.0/activations.npy?weights=untrained"
    first = client.get(url)
    assert first.status_code == 200 and first.headers["etag"].startswith('"')
    return url, dict(first.headers), first.content


def test_a_revalidation_naming_the_etag_gets_304_without_a_body(client: TestClient, view) -> None:  # noqa: ANN001
    url, headers, body = view
    etag = headers["etag"]
    for given in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = client.get(url, headers={"If-None-Match": given})
        assert again.status_code == 304, given
        assert again.content == b"" and again.headers["etag"] == etag
        assert again.headers["cache-control"] == headers["cache-control"]
        assert again.headers["x-convscope-weights"] == "untrained"
        assert "content-type" not in again.headers
        assert again.headers["x-content-type-options"] == "nosniff"  # the security headers still come
    head = client.head(url, headers={"If-None-Match": etag})
    assert head.status_code == 304 and head.content == b""


def test_a_stale_or_foreign_tag_gets_the_whole_answer(client: TestClient, view) -> None:  # noqa: ANN001
    url, headers, body = view
    for given in ('"0123"', "W/\"0123\"", headers["etag"].strip('"'), ""):
        again = client.get(url, headers={"If-None-Match": given})
        assert again.status_code == 200 and again.content == body, given
    assert load_npy(body).shape[0] == 6


def test_answers_without_an_etag_and_errors_pass_untouched(client: TestClient) -> None:
    assert client.get("/api/health", headers={"If-None-Match": "*"}).status_code == 200  # JSON: no ETag
    missing = client.get("/api/models/lenet5/images/" + "0" * 64 + "/input.npy", headers={"If-None-Match": "*"})
    assert missing.status_code == 404 and missing.json()["error"]["code"]


def test_only_reads_are_answered_304() -> None:
    sent: list[dict] = []

    async def app(scope, receive, send) -> None:  # noqa: ANN001
        await send({"type": "http.response.start", "status": 200, "headers": [(b"etag", b'"t"')]})
        await send({"type": "http.response.body", "body": b"made", "more_body": False})

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "POST", "path": "/x", "headers": [(b"if-none-match", b'"t"')]}
    asyncio.run(NotModifiedMiddleware(app)(scope, receive, send))
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"made"
