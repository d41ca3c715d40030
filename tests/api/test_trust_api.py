"""sanity.json and deletion.json through the API: 202 then the result, scores recomputed with scipy and
scikit-image from the served maps, a deletion curve recomputed with plain PyTorch, errors, cancellation,
caching, and a models-file model."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from scipy.ndimage import gaussian_filter
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

from models.datasets.mnist import load_mnist_test
from server.main import create_app
from server.settings import Settings
from tests.conftest import load_npy, png_bytes
from tests.harness import poll_json, wait_until


@pytest.fixture(scope="module")
def digit_id(module_client, shared_data) -> str:
    images, _ = load_mnist_test(shared_data / "mnist")
    response = module_client.post("/api/images", files={"file": ("d.png", png_bytes(images[0]), "image/png")})
    assert response.status_code == 201, response.text
    return response.json()["image_id"]


def _base(image_id: str, model: str = "lenet5") -> str:
    return f"/api/models/{model}/images/{image_id}/saliency"


def wait_for_sanity(client: TestClient, url: str, deadline_s: float = 300.0) -> dict:
    """Poll as the page does (202 while computing) until the answer; the deadline only ends a broken run."""

    def pending(response: Any) -> None:
        body = response.json()
        assert body["state"] in ("queued", "running") and body["progress"]["total"] > 0
        assert response.headers["retry-after"] == "1"

    return poll_json(lambda: client.get(url), deadline_s, f"{url} to finish", pending)


def test_sanity_check_scores_equal_scipy_and_skimage_on_the_served_maps(module_client, digit_id) -> None:
    url = f"{_base(digit_id)}/sanity.json?methods=gradcam,gradient&seed=1"
    answer = wait_for_sanity(module_client, url)
    assert answer["target"] == {"index": 7, "label": "7"}
    assert [s["randomised"] for s in answer["steps"]] == [["classifier.5"], ["classifier.3"], ["classifier.1"],
                                                         ["features.3"], ["features.0"]]
    for method in ("gradcam", "gradient"):
        maps = [load_npy(module_client.get(u).content) for u in answer["maps"][method]]
        assert len(maps) == 6 and maps[0].shape == (28, 28)
        for step, entry in enumerate(answer["steps"], start=1):
            expected = abs(spearmanr(maps[0].ravel(), maps[step].ravel()).statistic)
            if np.isnan(expected):  # a flat map: reported as no correlation
                expected = 0.0
            assert abs(entry["scores"][method]["spearman"] - expected) < 1e-6
            a, b = (m.astype(np.float64) for m in (maps[0], maps[step]))
            scaled = [(m - m.min()) / (m.max() - m.min()) if m.max() > m.min() else np.zeros_like(m) for m in (a, b)]
            assert abs(entry["scores"][method]["ssim"] - structural_similarity(*scaled, data_range=1.0)) < 1e-6
        check = answer["checks"][method]
        assert check["half_step"] == 3
        assert check["passes"] == (answer["steps"][2]["scores"][method]["spearman"] <= 0.5)
    strip = Image.open(io.BytesIO(module_client.get(answer["strips"]["gradcam"]).content))
    assert strip.size == (6 * 28 + 5 * 2, 28)
    # cached: the same URL answers at once, without a new job
    assert module_client.get(url).status_code == 200


def test_sanity_errors(module_client, digit_id) -> None:
    base = _base(digit_id)
    assert module_client.get(f"{base}/sanity.json?methods=nope").status_code == 422
    too_many = ",".join(["gradcam", "gradient", "scorecam", "layercam", "xgradcam", "eigencam", "gradcampp"])
    assert module_client.get(f"{base}/sanity.json?methods={too_many}").status_code == 422
    module_client.app.state.settings.sanity_max_methods = 2
    try:
        fewer = module_client.get(f"{base}/sanity.json?methods=gradcam,gradient,scorecam")
        assert fewer.status_code == 422 and fewer.json()["error"]["code"] == "too_many_methods"
    finally:
        module_client.app.state.settings.sanity_max_methods = 6
    assert module_client.get(f"{base}/sanity.json?methods=,").status_code == 422
    assert module_client.get(f"{base}/sanity.json?target=10").status_code == 404
    assert module_client.get(f"{base}/sanity.json?seed=-1").status_code == 422
    assert module_client.get(f"{_base('0' * 64)}/sanity.json").status_code == 404
    missing = module_client.get(f"{base}/sanity/strip.png?methods=gradcam&seed=77&method=gradcam")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_computed"
    other = module_client.get(f"{base}/sanity/0.npy?methods=gradcam&method=gradient")
    assert other.status_code == 404 and other.json()["error"]["code"] == "method_not_checked"


def test_sanity_cancel_while_queued_and_running(module_client, digit_id) -> None:
    """A check waiting behind another job is cancelled before it starts; a running one stops at its next map."""
    import threading

    jobs = module_client.app.state.background_jobs
    release = threading.Event()
    started = threading.Event()

    def blocker(job) -> None:  # noqa: ANN001 - a Job
        started.set()
        release.wait(30)

    jobs.submit(("test", "blocker"), blocker)
    assert started.wait(30)
    url = f"{_base(digit_id)}/sanity.json?methods=gradcam&seed=5"
    assert module_client.get(url).json()["state"] == "queued"
    assert module_client.delete(url).json()["state"] == "cancelled"
    release.set()
    assert module_client.get(url).status_code == 202  # asking again starts it afresh

    # running: cancel from inside the run's first progress report, then see it end as cancelled
    key = _sanity_key(digit_id, ("gradient",), 6)
    url = f"{_base(digit_id)}/sanity.json?methods=gradient&seed=6"
    service = module_client.app.state.trust.sanity
    original = service.jobs.submit

    def submit_and_cancel(job_key, run, total=0, **described):  # noqa: ANN001, ANN003, ANN202
        def cancelling(job):  # noqa: ANN001, ANN202
            job.cancel_event.set()
            return run(job)

        return original(job_key, cancelling, total, **described)

    service.jobs.submit = submit_and_cancel
    try:
        assert module_client.get(url).status_code == 202
    finally:
        del service.jobs.submit
    wait_until(lambda: jobs.get(("sanity", key)).state not in ("queued", "running"), timeout=60,
               what="the cancelled job to end", poll_s=0.05)
    job = jobs.get(("sanity", key))
    assert job.state == "cancelled" and service.result(key) is None


def _sanity_key(image_id, methods, seed):
    from server.services.trust.sanity import SanityKey

    return SanityKey("lenet5", "trained", image_id, methods, None, seed)


def _reference_curves(model: torch.nn.Module, x: torch.Tensor, base: torch.Tensor, order: np.ndarray,
                      target: int, k: int) -> tuple[list[float], list[float], list[float]]:
    """One image at a time, pixels set through a flat view, plain softmax."""
    n_pixels = x.shape[-1] * x.shape[-2]
    deletion, insertion, xs = [], [], []
    for i in range(k + 1):
        n = round(i * n_pixels / k)
        chosen = torch.from_numpy(order[:n].astype(np.int64))
        deleted = x.clone().reshape(x.shape[1], -1)
        deleted[:, chosen] = base.reshape(x.shape[1], -1)[:, chosen]
        inserted = base.clone().reshape(x.shape[1], -1)
        inserted[:, chosen] = x.reshape(x.shape[1], -1)[:, chosen]
        with torch.no_grad():
            deletion.append(float(torch.softmax(model(deleted.reshape(x.shape)), 1)[0, target]))
            insertion.append(float(torch.softmax(model(inserted.reshape(x.shape)), 1)[0, target]))
        xs.append(n / n_pixels)
    return deletion, insertion, xs


def _trapezoid(xs: list[float], ys: list[float]) -> float:
    return sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(len(xs) - 1))


@pytest.mark.parametrize(("method", "baseline"), [("gradient", "mean"), ("gradcam", "blur")])
def test_deletion_curve_equals_plain_pytorch(module_client, digit_id, method, baseline) -> None:
    base_url = _base(digit_id)
    answer = module_client.get(f"{base_url}/deletion.json?method={method}&baseline={baseline}&steps=10").json()
    assert answer["target"]["index"] == 7 and len(answer["deletion"]) == 11
    order = load_npy(module_client.get(answer["urls"]["order"]).content).astype(np.int64)
    assert sorted(order.tolist()) == list(range(28 * 28))
    # the order follows the served map, largest first
    values = load_npy(module_client.get(f"{base_url}.npy?method={method}").content).ravel()
    assert np.all(np.diff(values[order]) <= 0)
    x = torch.from_numpy(load_npy(module_client.get(f"/api/models/lenet5/images/{digit_id}/input.npy").content))[None]
    if baseline == "mean":
        base = torch.zeros_like(x)
    else:  # scipy's own Gaussian: same sigma, radius ceil(3 sigma), mirrored borders
        base = torch.from_numpy(gaussian_filter(x[0, 0].double().numpy(), 2.0, mode="mirror", truncate=3.0))
        base = base.float().reshape(x.shape)
    model = module_client.app.state.runtime.load("lenet5").module
    deletion, insertion, xs = _reference_curves(model, x, base, order, 7, 10)
    assert np.allclose(answer["fractions"], xs)
    assert np.allclose(answer["deletion"], deletion, atol=1e-5)
    assert np.allclose(answer["insertion"], insertion, atol=1e-5)
    assert abs(answer["deletion_auc"] - _trapezoid(xs, deletion)) < 1e-6
    assert abs(answer["insertion_auc"] - _trapezoid(xs, insertion)) < 1e-6
    random_order = load_npy(module_client.get(answer["urls"]["random_order"]).content).astype(np.int64)
    r_deletion, r_insertion, _ = _reference_curves(model, x, base, random_order, 7, 10)
    assert abs(answer["random"]["deletion_auc"] - _trapezoid(xs, r_deletion)) < 1e-6
    assert abs(answer["random"]["insertion_auc"] - _trapezoid(xs, r_insertion)) < 1e-6
    picture = Image.open(io.BytesIO(module_client.get(answer["urls"]["baseline"]).content))
    assert picture.size == (28, 28)


def test_deletion_errors(module_client, digit_id) -> None:
    base = _base(digit_id)
    for query, status in (("steps=1", 422), ("steps=51", 422), ("baseline=noise", 422), ("method=nope", 422),
                          ("target=10", 404), ("seed=10000", 422)):
        response = module_client.get(f"{base}/deletion.json?{query}")
        assert response.status_code == status, (query, response.text)
        assert "error" in response.json()


def test_both_checks_on_a_models_file_model(tmp_path: Path) -> None:
    import timm

    torch.manual_seed(0)
    torch.save(timm.create_model("test_efficientnet", pretrained=False, num_classes=4).state_dict(), tmp_path / "te.pt")
    (tmp_path / "models.toml").write_text(textwrap.dedent('''
        [[model]]
        id = "tiny-timm"
        title = "timm test_efficientnet, 4 classes"
        timm = "test_efficientnet"
        kwargs = { num_classes = 4 }
        weights = "te.pt"
        labels = ["a", "b", "c", "d"]
    '''))
    settings = Settings(storage_dir=tmp_path / "images", models_file=tmp_path / "models.toml")
    with TestClient(create_app(settings)) as client:
        rng = np.random.default_rng(0)
        image_id = client.post("/api/images", files={"file": ("x.png", png_bytes(
            rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), "image/png")}).json()["image_id"]
        base = _base(image_id, "tiny-timm")
        answer = wait_for_sanity(client, f"{base}/sanity.json?methods=gradcam,guided-backprop")
        assert answer["weights_used"] == "trained" and len(answer["steps"]) >= 3
        assert set(answer["checks"]) == {"gradcam", "guided-backprop"}
        curves = client.get(f"{base}/deletion.json?method=gradcam&steps=5")
        assert curves.status_code == 200, curves.text
        assert 0.0 <= curves.json()["deletion_auc"] <= 1.0 and len(curves.json()["insertion"]) == 6
