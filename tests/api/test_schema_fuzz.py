"""Property-based fuzzing of every operation in the OpenAPI schema with schemathesis: whatever the
generated request, the server answers without a 5xx, and every error is in the API.md shape.

Bounded: a fixed number of examples per operation, derandomised (the same examples on every run), the
small bundled models only. Path parameters are drawn half from the schema (random strings) and half from
real values (a stored image, real models and layers), so the fuzzing also reaches past the 404s into the
range checks. The weights download (which would go to the network) is left out.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from server.main import create_app
from server.services.image_store import ImageStore
from server.settings import Settings
from tests.conftest import png_bytes

MAX_EXAMPLES = 25

_storage = Path(tempfile.mkdtemp(prefix="convscope-fuzz-"))
atexit.register(shutil.rmtree, _storage, ignore_errors=True)
# A real image already in the store (found by the app's store when it scans its folder at startup).
IMAGE_ID = (
    ImageStore(_storage, 64 * 1024 * 1024, 50_000_000)
    .put(png_bytes(np.tile(np.arange(28, dtype=np.uint8) * 9, (28, 1))))
    .image_id
)

APP = create_app(Settings(storage_dir=_storage, max_loaded_models=3))
REAL_PATH_VALUES: dict[str, list[object]] = {
    "model": ["lenet5", "mnist-shallow", "tinyvgg-shapes"],
    "image_id": [IMAGE_ID],
    "layer": ["features.0", "features.3", "conv1", "block1.0"],
    "channel": [0, 1, 5],
    "sample_id": ["shapes-test-0", "mnist-test-1"],
}
REAL_QUERY_VALUES: dict[str, list[object]] = {
    "layer": ["features.0", "features.3"],
    "method": ["gradcam"],
    "weights": ["untrained"],
}

schema = schemathesis.openapi.from_asgi("/openapi.json", APP).exclude(
    path="/api/models/{model}/weights/download", method="POST"
)


def _mixed(drawn: dict | None, real: dict[str, list[object]]) -> st.SearchStrategy:
    if not drawn:
        return st.just(drawn)
    return st.fixed_dictionaries(
        {
            name: st.sampled_from([value, *real[name]]) if name in real else st.just(value)
            for name, value in drawn.items()
        }
    )


@schema.hook
def flatmap_path_parameters(_context, path_parameters):  # noqa: ANN001 - schemathesis hook signature
    return _mixed(path_parameters, REAL_PATH_VALUES)


@schema.hook
def flatmap_query(_context, query):  # noqa: ANN001
    return _mixed(query, REAL_QUERY_VALUES)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
def test_no_server_errors(case) -> None:  # noqa: ANN001
    response = case.call()
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} {case.query} → {response.status_code}: {response.text[:300]}"
    )
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and body["error"].get("code") and body["error"].get("message"), body
