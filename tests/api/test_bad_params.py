"""Bad parameters on every endpoint get a 4xx JSON error in the API.md shape, never a 500.

Two layers: a table of requests whose exact answer we know (unknown model/layer/image, out-of-range
numbers, NaN, wrong types, oversized sandbox grids), and a sweep that walks the OpenAPI schema and feeds
every path and query parameter of every GET endpoint a list of hostile values."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient

from server.main import create_app
from server.settings import Settings
from tests.conftest import png_bytes

UNKNOWN_IMAGE = "0" * 64


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    settings = Settings(storage_dir=Path(tmp_path_factory.mktemp("images")))
    with TestClient(create_app(settings)) as client:
        image = png_bytes(np.tile(np.arange(28, dtype=np.uint8) * 9, (28, 1)))
        image_id = client.post("/api/images", files={"file": ("g.png", image, "image/png")}).json()["image_id"]
        yield client, image_id


def assert_error(response, status: int | tuple[int, ...], code: str | None = None) -> None:
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (response.request.url, response.status_code, response.text[:300])
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"], body
    if code is not None:
        assert body["error"]["code"] == code, body


# --- requests whose exact answer is known ----------------------------------------------------------------

def core_cases(image_id: str) -> list[tuple[str, int | tuple[int, ...], str | None]]:
    m = f"/api/models/lenet5/images/{image_id}"
    return [
        ("/api/models/nope", 404, "unknown_model"),
        ("/api/models/LENET5", 404, "unknown_model"),
        ("/api/models/nope/layers/features.0/weights.npy", 404, "unknown_model"),
        ("/api/models/lenet5/layers/nope/weights.npy", 404, "unknown_layer"),
        ("/api/models/lenet5/layers/features.1/weights.npy", 404, "no_weight"),  # an activation has none
        ("/api/models/lenet5?weights=best", 422, "validation_error"),
        ("/api/models/lenet5?weights=", 422, "validation_error"),
        (f"/api/images/{UNKNOWN_IMAGE}", 404, "unknown_image"),
        ("/api/images/not-a-hash", 404, "unknown_image"),
        (f"/api/models/lenet5/images/{UNKNOWN_IMAGE}/predictions", 404, "unknown_image"),
        (f"/api/models/nope/images/{image_id}/predictions", 404, "unknown_model"),
        (f"{m}/predictions?top_k=0", 422, "validation_error"),
        (f"{m}/predictions?top_k=-3", 422, "validation_error"),
        (f"{m}/predictions?top_k=99999999999999999999999", 422, "validation_error"),
        (f"{m}/predictions?top_k=nan", 422, "validation_error"),
        (f"{m}/predictions?top_k=1.5", 422, "validation_error"),
        (f"{m}/predictions?top_k=five", 422, "validation_error"),
        (f"{m}/input.npy?weights=123", 422, "validation_error"),
        ("/api/samples?count=0", 422, "validation_error"),
        ("/api/samples?count=100000", 422, "validation_error"),
        ("/api/samples?dataset=imagenet", 422, "validation_error"),
        ("/api/samples/shapes-test-99999999.png", 404, "unknown_sample"),
        ("/api/samples/cifar-test-1.png", 404, "unknown_sample"),
        ("/api/models/nope/weights/download", 404, "unknown_model"),
        (f"{m}/layers/nope/activations.npy", 404, "unknown_layer"),
        (f"{m}/layers/features.0/channels/-1.npy", (404, 422), None),
        (f"{m}/layers/features.0/channels/6.npy", (404, 422), None),  # conv1 has channels 0–5
        (f"{m}/layers/features.0/channels/99999999999999999999.png", (404, 422), None),
        (f"{m}/layers/features.0/channels/nan.npy", (404, 422), None),
        (f"{m}/layers/features.0/atlas.png?columns=0", 422, None),
        (f"{m}/layers/features.0/atlas.png?colormap=rainbow-of-doom", (404, 422), None),
        (f"{m}/layers/features.0/atlas.png?scale=banana", 422, None),
        ("/api/models/lenet5/layers/nope/filters.png", 404, "unknown_layer"),
        ("/api/models/lenet5/layers/features.0/filters.png?out_start=-1", 422, None),
        ("/api/models/lenet5/layers/features.0/filters.png?out_start=100000", (404, 422), None),
        ("/api/models/lenet5/layers/features.0/histogram.json?bins=0", 422, None),
        ("/api/models/lenet5/layers/features.0/histogram.json?bins=1000000000", 422, None),
        (f"{m}/layers/features.0/trace?channel=-1", 422, None),
        (f"{m}/layers/features.0/trace?channel=999", (404, 422), None),
        (f"{m}/layers/features.0/trace?y=-1&x=0", 422, None),
        (f"{m}/layers/features.0/trace?y=0&x=100000", (404, 422), None),
        (f"{m}/layers/features.0/trace?y=nan", 422, None),
        (f"{m}/layers/nope/trace", 404, None),
        (f"{m}/saliency.npy?method=nope", (404, 422), None),
        (f"{m}/saliency.npy?method=gradcam&layer=nope", (404, 422), None),
        (f"{m}/saliency.npy?method=gradcam&target=10", (404, 422), None),
        (f"{m}/saliency.npy?method=gradcam&target=-1", 422, None),
        (f"{m}/saliency.npy?method=gradcam&target=1e400", 422, None),
        (f"{m}/saliency.png?opacity=nan", 422, None),
        (f"{m}/saliency.png?opacity=7", 422, None),
        (f"{m}/saliency/topk.json?k=0", 422, None),
        (f"{m}/saliency/topk.json?k=100000", 422, None),
        ("/api/sandbox/kernels/gabor?size=1000", 422, None),
        ("/api/sandbox/kernels/gabor?theta=nan", 422, None),
        ("/api/sandbox/kernels/gabor?wavelength=0", 422, None),
        ("/api/sandbox/kernels/gabor?sigma=inf", 422, None),
        (f"/api/sandbox/images/{image_id}/filtered.png?preset=nope", (404, 422), None),
        (f"/api/sandbox/images/{image_id}/filtered.png?kernel=1,2,nan", (400, 422), None),
        (f"/api/sandbox/images/{image_id}/filtered.png?kernel=" + quote(json.dumps([[1] * 40] * 40)), (400, 413, 414, 422), None),
        (f"/api/sandbox/images/{image_id}/filtered.png?stride=0", 422, None),
        (f"/api/sandbox/images/{image_id}/filtered.png?dilation=-2", 422, None),
        (f"/api/sandbox/images/{image_id}/crop?size=0", 422, None),
        (f"/api/sandbox/images/{image_id}/crop?cx=2", 422, None),
        (f"/api/sandbox/images/{UNKNOWN_IMAGE}/crop", 404, None),
    ]


def test_known_bad_requests(api) -> None:
    client, image_id = api
    paths = client.app.openapi()["paths"]  # type: ignore[attr-defined]
    tried = 0
    for url, status, code in core_cases(image_id):
        template_exists = any(_matches(template, url.split("?")[0]) for template in paths)
        if not template_exists:
            continue  # an endpoint another issue has not added (yet)
        assert_error(client.get(url), status, code)
        tried += 1
    assert tried >= 30


def _matches(template: str, path: str) -> bool:
    pattern = "[^/]+".join(re.escape(part) for part in re.split(r"\{[^}]+\}", template))
    return re.fullmatch(pattern, path) is not None


# --- sandbox bodies ---------------------------------------------------------------------------------------

GRID = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]


def sandbox_bodies() -> list[tuple[str, str | bytes]]:
    big = [[1.0] * 17 for _ in range(17)]
    huge = [[1.0] * 64 for _ in range(64)]
    conv = {"input": GRID, "kernel": [[1.0]]}
    cases: list[tuple[str, object]] = [
        ("convolve", {**conv, "input": big}),
        ("convolve", {**conv, "input": huge}),
        ("convolve", {**conv, "input": [[1.0] * 65] * 65}),
        ("convolve", {**conv, "input": [[1.0] * 3] * 10000}),
        ("convolve", {**conv, "kernel": [[1.0] * 8] * 8}),
        ("convolve", {**conv, "input": []}),
        ("convolve", {**conv, "input": [[]]}),
        ("convolve", {**conv, "input": [[1.0, 2.0], [3.0]]}),  # ragged
        ("convolve", {**conv, "input": [["a", "b"]]}),
        ("convolve", {**conv, "input": "grid"}),
        ("convolve", {**conv, "input": None}),
        ("convolve", {**conv, "input": [[[1.0]]]}),
        ("convolve", {"kernel": [[1.0]]}),  # no input
        ("convolve", {**conv, "stride": 0}),
        ("convolve", {**conv, "stride": -1}),
        ("convolve", {**conv, "stride": 10**30}),
        ("convolve", {**conv, "stride": 1.5}),
        ("convolve", {**conv, "stride": "two"}),
        ("convolve", {**conv, "dilation": 0}),
        ("convolve", {**conv, "dilation": 1000}),
        ("convolve", {**conv, "padding": -1}),
        ("convolve", {**conv, "padding": 100000}),
        ("convolve", {**conv, "padding": "sideways"}),
        ("convolve", {**conv, "padding": [1, 2]}),
        ("convolve", {**conv, "mode": "deconvolution"}),
        ("convolve", {**conv, "activation": "tanh-ish"}),
        ("convolve", {**conv, "kernel": [[1.0] * 3] * 3, "padding": 0, "stride": 1, "dilation": 3}),  # bigger than input
        ("pool", {"input": GRID, "kernel_size": 0}),
        ("pool", {"input": GRID, "kernel_size": 100}),
        ("pool", {"input": GRID, "kernel_size": 2, "stride": 0}),
        ("pool", {"input": GRID, "kernel_size": 2, "padding": 5}),
        ("pool", {"input": GRID, "op": "median"}),
        ("pool", {"input": big}),
        ("shift", {"input": GRID, "kernel": [[1.0]], "dx": 10**9}),
        ("shift", {"input": GRID, "kernel": [[1.0] * 9] * 9}),
        ("shift", {"input": GRID, "kernel": [[1.0]], "pool_size": 0}),
    ]
    encoded: list[tuple[str, str | bytes]] = [(op, json.dumps(body)) for op, body in cases]
    # Values JSON itself cannot hold, written the way Python's and JavaScript's encoders leak them.
    encoded += [
        ("convolve", '{"input": [[NaN, 1], [1, 1]], "kernel": [[1]]}'),
        ("convolve", '{"input": [[Infinity, 1], [1, 1]], "kernel": [[1]]}'),
        ("convolve", '{"input": [[1e400, 1], [1, 1]], "kernel": [[1]]}'),
        ("convolve", '{"input": [[1, 1], [1, 1]], "kernel": [[-1e400]]}'),
        ("convolve", '{"input": [[1, 1], [1, 1]], "kernel": [[1]], "bias": NaN}'),
        ("pool", '{"input": [[NaN, 1], [1, 1]], "kernel_size": 2}'),
        ("convolve", "{not json"),
        ("convolve", ""),
        ("convolve", "[]"),
        ("convolve", "null"),
        ("convolve", "[" * 100_000 + "]" * 100_000),  # deep nesting
        ("convolve", b"\xff\xfe\x00garbage"),
    ]
    return encoded


def test_bad_sandbox_bodies(api) -> None:
    client, _ = api
    paths = client.app.openapi()["paths"]  # type: ignore[attr-defined]
    tried = 0
    for op, body in sandbox_bodies():
        if f"/api/sandbox/{op}" not in paths:
            continue
        response = client.post(f"/api/sandbox/{op}", content=body, headers={"content-type": "application/json"})
        assert_error(response, (400, 413, 422))
        tried += 1
    if "/api/sandbox/convolve" in paths:
        assert tried >= 40
        wrong_type = client.post("/api/sandbox/convolve", content=json.dumps({"input": GRID, "kernel": [[1]]}),
                                 headers={"content-type": "text/plain"})
        assert_error(wrong_type, (415, 422))
        too_big = client.post("/api/sandbox/convolve", content=b"[" + b"1," * 600_000 + b"1]",
                              headers={"content-type": "application/json"})
        assert_error(too_big, 413, "payload_too_large")


# --- every parameter of every GET endpoint, fed hostile values ------------------------------------------

HOSTILE_VALUES = ["-1", "0", "1000000", "99999999999999999999999", "1e309", "-1e309", "NaN", "inf", "1.5", "abc",
                  "", "%00", "%C3%BC", "x" * 3000, "true", "[1]", "null", "%7B%7D", "0x10", " 1"]
BASE_PATH_VALUES = {"model": "lenet5", "layer": "features.0", "channel": "0", "sample_id": "shapes-test-0"}


def get_operations(client: TestClient) -> list[tuple[str, list[dict]]]:
    ops = []
    for template, operations in client.app.openapi()["paths"].items():  # type: ignore[attr-defined]
        if "get" in operations and template != "/api/models/{model}/weights/download":
            ops.append((template, operations["get"].get("parameters", [])))
    return ops


def test_every_parameter_of_every_get_endpoint(api) -> None:
    client, image_id = api
    base_values = {**BASE_PATH_VALUES, "image_id": image_id}
    requests = 0
    failures = []
    for template, params in get_operations(client):
        path_params = [p["name"] for p in params if p["in"] == "path"]
        base = template
        for name in path_params:
            base = base.replace("{" + name + "}", base_values.get(name, "0"))
        for param in params:
            for value in HOSTILE_VALUES:
                if param["in"] == "path":
                    if value == "":
                        continue  # an empty segment is another URL, not this parameter
                    url = template
                    for name in path_params:
                        url = url.replace("{" + name + "}", value if name == param["name"] else base_values.get(name, "0"))
                else:
                    url = f"{base}?{param['name']}={value}"
                response = client.get(url)
                requests += 1
                if response.status_code >= 500:
                    failures.append(f"{url[:200]} → {response.status_code} {response.text[:200]}")
                elif response.status_code >= 400:
                    body = response.json()
                    if set(body) != {"error"} or not body["error"].get("code"):
                        failures.append(f"{url[:200]} → {response.status_code} not in the error shape: {body}")
    assert requests > 300
    assert not failures, "\n".join(failures[:40])


# --- every layer of the small models through every layer-scoped endpoint ---------------------------------

LAYER_ENDPOINTS = ("{b}/layers/{layer}/activations.npy", "{b}/layers/{layer}/stats.json", "{b}/layers/{layer}/atlas.png",
                   "{b}/layers/{layer}/channels/0.png", "{b}/layers/{layer}/channels/0.npy",
                   "{b}/layers/{layer}/trace?channel=1&y=3&x=2", "{b}/layers/{layer}/trace/output.npy?stage=final",
                   "/api/models/{m}/layers/{layer}/filters.png", "/api/models/{m}/layers/{layer}/histogram.json",
                   "/api/models/{m}/layers/{layer}/bias.npy", "{b}/saliency.json?method=gradcam&layer={layer}")


@pytest.mark.parametrize("model", ["lenet5", "mnist-shallow", "tinyvgg-shapes"])
def test_every_layer_kind_on_every_layer_endpoint(api, model: str) -> None:
    """Containers, activations, pads, flattens and linear layers too: a layer an endpoint cannot show gets
    a 4xx, never a crash."""
    client, image_id = api
    paths = client.app.openapi()["paths"]  # type: ignore[attr-defined]
    layers = [layer["name"] for layer in client.get(f"/api/models/{model}").json()["layers"]]
    base = f"/api/models/{model}/images/{image_id}"
    failures = []
    for layer in layers:
        for pattern in LAYER_ENDPOINTS:
            url = pattern.format(b=base, m=model, layer=layer)
            if not any(_matches(template, url.split("?")[0]) for template in paths):
                continue
            response = client.get(url)
            if response.status_code >= 500:
                failures.append(f"{url} → {response.status_code} {response.text[:200]}")
            elif response.status_code >= 400:
                assert set(response.json()) == {"error"}, url
    assert not failures, "\n".join(failures[:20])


def test_layers_fed_a_list_are_refused_cleanly_by_the_trace(api) -> None:
    """DenseNet's dense layers take a list of tensors: the step-through cannot show them, and says so (4xx)
    instead of crashing. (Found by sweeping every layer of the torchvision models.)"""
    client, image_id = api
    paths = client.app.openapi()["paths"]  # type: ignore[attr-defined]
    base = f"/api/models/densenet121/images/{image_id}/layers/features.denseblock1.denselayer1"
    urls = [f"{base}/trace", f"{base}/trace?channel=1&y=3&x=2", f"{base}/trace/input.npy", f"{base}/trace/output.npy"]
    urls = [u for u in urls if any(_matches(t, u.split("?")[0]) for t in paths)]
    if not urls:
        pytest.skip("no trace endpoints")
    for url in urls:
        assert_error(client.get(url), (404, 422))


# --- costs bounded by the parameters' bounds (issue 10) -----------------------------------------------------

def test_unbounded_numbers_are_refused_cleanly(api) -> None:
    """Before: filtered.png?padding=3000 took 5 s and 2.8 GB, 1e6/1e11/1e20 and theta=inf answered 500,
    theta=nan drew an all-NaN picture, negative_slope NaN/inf/1e308 gave 200 with null in the grid."""
    client, image_id = api
    f = f"/api/sandbox/images/{image_id}/filtered.png"
    for query in ("padding=3000", "padding=1e6", "padding=100000000000", "padding=1e20", "padding=-1",
                  "padding=33", "preset=gabor&theta=inf", "preset=gabor&theta=nan", "preset=gabor&theta=-inf",
                  "preset=gabor&theta=1e308", "preset=gabor&wavelength=nan", "kernel=1,2;3,4&padding=nan",
                  "kernel=1e400", "kernel=nan", "kernel=inf,1"):
        assert_error(client.get(f"{f}?{query}"), 422)
    ok = client.get(f"{f}?preset=sobel_x&padding=32")
    assert ok.status_code == 200 and ok.headers["content-type"] == "image/png"
    for slope in ("NaN", "Infinity", "-Infinity", "1e308", "101", "true", '"0.1"'):
        body = '{"input": [[1, -2], [3, -4]], "kernel": [[1]], "activation": "leaky_relu", "negative_slope": ' + slope + "}"
        response = client.post("/api/sandbox/convolve", content=body, headers={"content-type": "application/json"})
        assert_error(response, 422)
    fine = client.post("/api/sandbox/convolve", json={"input": [[1, -2], [3, -4]], "kernel": [[1]],
                                                      "activation": "leaky_relu", "negative_slope": 0.5})
    assert fine.status_code == 200 and fine.json()["activated"] == [[1.0, -1.0], [3.0, -2.0]]


def test_gradient_top_k_runs_a_few_classes_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: topk.json with integrated gradients and k=20 held 20 classes' gradients and a 20-fold batched
    backward at once (+5.2 GB on ResNet-50). Now gradient methods explain at most TARGETS_PER_PASS classes per
    pass, so k costs time, not memory; the maps are the same as all classes at once."""
    import torch

    from server.services.saliency import get_method, topk
    from server.services.saliency.base import TopK
    from tests.saliency_support import small_models

    loaded, x = small_models()["tinyvgg"]
    sizes: list[int] = []
    method_type = type(get_method("integrated-gradients"))
    original = method_type.explain

    def counting(self, loaded_, batch, layer, targets, progress=None):  # noqa: ANN001
        sizes.append(targets.k if isinstance(targets, TopK) else len(targets))
        return original(self, loaded_, batch, layer, targets, progress)

    monkeypatch.setattr(method_type, "explain", counting)
    k = min(10, loaded.entry.num_classes)
    answer = topk.predictions_with_saliency(loaded, x, k=k, method="integrated-gradients")
    assert max(sizes) <= topk.TARGETS_PER_PASS and len(sizes) > 1
    monkeypatch.setattr(method_type, "explain", original)
    whole = get_method("integrated-gradients").explain(loaded, x, None, TopK(k))
    assert answer.explanation.targets == whole.targets and len(answer.predictions) == k
    torch.testing.assert_close(answer.explanation.raw, whole.raw)
