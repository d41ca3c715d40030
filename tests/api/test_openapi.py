"""The OpenAPI schema tells the truth (issue 15), checked on the schema itself, and used the way a
practitioner would: a Python client generated from it alone uploads an image and reads predictions and
a .npy (schemathesis checks the answers against it in test_schema_fuzz.py)."""

from __future__ import annotations

import importlib
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from server.main import create_app
from server.openapi import BINARY_SUFFIXES, TAGS
from server.settings import Settings
from tests.conftest import png_bytes

ERROR_REF = "#/components/schemas/Error"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(storage_dir=tmp_path_factory.mktemp("images")))) as client:
        yield client


@pytest.fixture(scope="module")
def schema(api: TestClient) -> dict:
    response = api.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def operations(schema: dict) -> Iterator[tuple[str, str, dict]]:
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            yield path, method, op


def test_binary_answers_have_their_media_type(schema: dict) -> None:
    checked = 0
    for path, _, op in operations(schema):
        suffix = next((s for s in BINARY_SUFFIXES if path.endswith(s)), None)
        if suffix is None:
            continue
        content = op["responses"]["200"]["content"]
        assert list(content) == [BINARY_SUFFIXES[suffix][0]], path
        assert content[BINARY_SUFFIXES[suffix][0]]["schema"] == {"type": "string", "format": "binary"}, path
        checked += 1
    assert checked >= 15
    stored = schema["paths"]["/api/images/{image_id}"]["get"]["responses"]["200"]["content"]
    assert list(stored) == ["image/png"]


def test_every_error_answer_uses_the_one_error_schema(schema: dict) -> None:
    assert schema["components"]["schemas"]["Error"]["required"] == ["error"]
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for path, method, op in operations(schema):
        statuses = {int(s) for s in op["responses"]}
        errors = {s for s in statuses if s >= 400}
        assert {400, 414} <= errors, (method, path)
        if "{" in path:
            assert 404 in errors, (method, path)
        if op.get("parameters") or op.get("requestBody"):
            assert 422 in errors, (method, path)
        if method == "post":
            assert {403, 408, 413, 415} <= errors, (method, path)
        for status in errors:
            response = op["responses"][str(status)]
            assert response["content"] == {"application/json": {"schema": {"$ref": ERROR_REF}}}, (method, path, status)
            assert response["description"]
            if status in (429, 503):
                assert "Retry-After" in response["headers"]


def _numeric(schema_part: dict) -> list[dict]:
    if schema_part.get("type") in ("integer", "number"):
        return [schema_part]
    found = []
    for key in ("anyOf", "oneOf"):
        for option in schema_part.get(key, []):
            found += _numeric(option)
    if schema_part.get("type") == "array":
        found += _numeric(schema_part.get("items", {}))
    return found


def test_every_number_a_client_sends_has_its_bounds(schema: dict) -> None:
    """Every numeric query/path parameter and every number in a request body has a minimum and a maximum."""
    unbounded = []
    for path, method, op in operations(schema):
        for param in op.get("parameters", []):
            for number in _numeric(param["schema"]):
                if "minimum" not in number or "maximum" not in number:
                    unbounded.append(f"{method} {path} ?{param['name']}")
    for name, component in schema["components"]["schemas"].items():
        if not name.endswith("Request"):
            continue
        for prop, spec in component["properties"].items():
            for number in _numeric(spec):
                if "minimum" not in number or "maximum" not in number:
                    unbounded.append(f"{name}.{prop}")
    assert not unbounded, unbounded


def test_the_docs_are_a_usable_reference(schema: dict, api: TestClient) -> None:
    tag_names = {t["name"] for t in schema["tags"]}
    assert tag_names == {t["name"] for t in TAGS} and all(t["description"] for t in schema["tags"])
    for path, method, op in operations(schema):
        assert op.get("tags") and set(op["tags"]) <= tag_names, (method, path)
        summary = op.get("summary", "")
        assert summary and "\n" not in summary and len(summary) <= 90, (method, path, summary)
    upload = schema["paths"]["/api/images"]["post"]
    multipart = upload["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert multipart["required"] == ["file"] and multipart["properties"]["file"]["format"] == "binary"
    assert {"image/*", "application/octet-stream"} <= set(upload["requestBody"]["content"])
    for path, method, status in (("/api/health", "get", "200"), ("/api/images", "post", "201"),
                                 ("/api/models/{model}/images/{image_id}/predictions", "get", "200"),
                                 ("/api/sandbox/convolve", "post", "200"), ("/api/models", "get", "200")):
        assert "example" in schema["paths"][path][method]["responses"][status]["content"]["application/json"], path
    docs = api.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text


# --- a client generated from the schema alone ------------------------------------------------------------------

CLIENT_CONFIG = """\
post_hooks: []
"""


def test_a_generated_client_uploads_and_reads_predictions_and_npy(api: TestClient, schema: dict,
                                                                  tmp_path: Path) -> None:
    pytest.importorskip("openapi_python_client")
    import json

    (tmp_path / "openapi.json").write_text(json.dumps(schema))
    (tmp_path / "config.yaml").write_text(CLIENT_CONFIG)
    out = tmp_path / "convscope_client"
    generated = subprocess.run([sys.executable, "-m", "openapi_python_client", "generate", "--path", "openapi.json",
                                "--output-path", str(out), "--meta", "none", "--config", "config.yaml"],
                               cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert generated.returncode == 0 and (out / "client.py").exists(), generated.stdout[-3000:] + generated.stderr[-3000:]
    # openapi-python-client 0.29 forgets one import in operations with several request media types
    # (multipart and raw bytes here): add it, and nothing else.
    for module in out.rglob("*.py"):
        text = module.read_text()
        if "| Unset" in text and "import Unset" not in text and "Unset," not in text and ", Unset" not in text:
            module.write_text(text.replace("from ...types import Response, UNSET",
                                           "from ...types import Response, UNSET, Unset", 1))
    sys.path.insert(0, str(tmp_path))
    try:
        client_module = importlib.import_module("convscope_client")
        upload = importlib.import_module("convscope_client.api.images.upload_image_api_images_post")
        predictions = importlib.import_module(
            "convscope_client.api.images.predictions_api_models_model_images_image_id_predictions_get")
        input_npy = importlib.import_module(
            "convscope_client.api.images.model_input_api_models_model_images_image_id_input_npy_get")
        types = importlib.import_module("convscope_client.types")
        bodies = importlib.import_module("convscope_client.models")

        client = client_module.Client(base_url="http://testserver").set_httpx_client(api)
        picture = png_bytes(np.tile(np.arange(28, dtype=np.uint8) * 9, (28, 1)))
        body = bodies.UploadImageApiImagesPostFilesBody(file=types.File(io.BytesIO(picture), "digit.png", "image/png"))
        stored = upload.sync(client=client, body=body)
        assert isinstance(stored, bodies.Uploaded), stored
        assert len(stored.image_id) == 64 and (stored.width, stored.height) == (28, 28)

        answer = predictions.sync("lenet5", stored.image_id, client=client, top_k=3)
        assert isinstance(answer, bodies.Predictions), answer
        probabilities = [p.probability for p in answer.predictions]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert {p.index for p in answer.predictions} <= set(range(10))

        npy = input_npy.sync_detailed("lenet5", stored.image_id, client=client)
        assert npy.status_code == 200
        tensor = np.load(io.BytesIO(npy.content), allow_pickle=False)
        assert tensor.shape == (1, 28, 28) and tensor.dtype == np.float32

        missing = predictions.sync("lenet5", "0" * 64, client=client)
        assert isinstance(missing, bodies.Error) and missing.error.code == "unknown_image"
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == "convscope_client" or n.startswith("convscope_client.")]:
            del sys.modules[name]
