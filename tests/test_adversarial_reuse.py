"""The adversarial experiment's kept clean pass (issue 22): moving the ε slider reuses one clean pass per
image and label — its gradient and clean layer outputs — and every answer still equals Captum's FGSM / PGD
and layer distances recomputed in plain PyTorch; the attack's clean forward files the image's prediction
when none was filed (equal to a plain forward); the smallest flipping ε is searched only when asked for."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from captum.robust import FGSM, PGD
from fastapi.testclient import TestClient

from server.main import create_app
from server.services.experiments.adversarial import AttackSpec
from server.settings import Settings
from tests.conftest import load_npy

TOL = 1e-5
MODEL = "lenet5"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(storage_dir=tmp_path_factory.mktemp("images")))) as test_client:
        yield test_client


def _upload(client: TestClient, shared_data: Path, name: str) -> str:
    data = (shared_data / "images" / name).read_bytes()
    return client.post("/api/images", files={"file": (name, data)}).json()["image_id"]


def _reference(client: TestClient, image: str) -> tuple[Any, torch.Tensor, Any]:
    """(the loaded model, the clean pixels, pixels → logits), built here from input.npy."""
    loaded = client.app.state.runtime.load(MODEL)  # type: ignore[attr-defined]
    x = torch.from_numpy(load_npy(client.get(f"/api/models/{MODEL}/images/{image}/input.npy").content))[None]
    mean = torch.tensor(loaded.preprocess_fn.mean).reshape(1, -1, 1, 1)
    std = torch.tensor(loaded.preprocess_fn.std).reshape(1, -1, 1, 1)
    return loaded, (x * std + mean).clamp(0, 1), lambda p: loaded.module((p - mean) / std)


def _captum(forward: Any, pixels: torch.Tensor, label: int, query: dict[str, Any]) -> torch.Tensor:
    loss = torch.nn.CrossEntropyLoss(reduction="none")
    labels = torch.tensor([label])
    if query["attack"] == "fgsm":
        return FGSM(forward, loss, lower_bound=0.0, upper_bound=1.0).perturb(pixels, query["epsilon"] / 255, labels)
    return PGD(forward, loss, lower_bound=0.0, upper_bound=1.0).perturb(
        pixels, query["epsilon"] / 255, query["step_size"] / 255, query["steps"], labels)


@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")  # Captum's own note
def test_an_epsilon_change_reuses_the_clean_pass_and_still_equals_captum(client, shared_data):
    image = _upload(client, shared_data, "cat.jpg")
    experiments = client.app.state.experiments  # type: ignore[attr-defined]
    loaded, pixels, forward = _reference(client, image)
    base = f"/api/models/{MODEL}/images/{image}"
    with torch.no_grad():
        label = int(forward(pixels).argmax())
    kept = None
    for query in ({"attack": "fgsm", "epsilon": 3}, {"attack": "fgsm", "epsilon": 9},
                  {"attack": "pgd", "epsilon": 6, "steps": 3, "step_size": 2}):
        answer = client.get(f"{base}/adversarial.json", params=query)
        assert answer.status_code == 200, answer.text
        clean = experiments.attack_base(loaded, image, None)
        assert kept is None or clean is kept, "one clean pass for every ε and attack on the image"
        kept = clean
        expected = _captum(forward, pixels, label, query)
        delta = torch.from_numpy(load_npy(client.get(f"{base}/adversarial/perturbation.npy", params=query).content))
        assert float((pixels[0] + delta / 255.0 - expected[0]).abs().max()) <= TOL, query
        with torch.no_grad():
            after = torch.softmax(forward(expected)[0], -1)
        for row in answer.json()["after"]:
            assert row["probability"] == pytest.approx(float(after[row["index"]]), abs=TOL), query
        modules = dict(loaded.module.named_modules())
        for row in answer.json()["layers"]:
            outputs = []
            for p in (pixels, expected):
                got: list[torch.Tensor] = []
                handle = modules[row["name"]].register_forward_hook(lambda m, i, o, got=got: got.append(o.detach().clone()))
                try:
                    with torch.no_grad():
                        forward(p)
                finally:
                    handle.remove()
                outputs.append(got[-1].double())
            reference = float(torch.linalg.vector_norm(outputs[1] - outputs[0]) / torch.linalg.vector_norm(outputs[0]))
            assert row["relative_l2"] == pytest.approx(reference, rel=1e-4, abs=1e-6), (query, row["name"])


def test_the_attacks_clean_forward_is_the_images_prediction_when_none_was_filed(client, shared_data):
    image = _upload(client, shared_data, "dog.jpg")
    outputs = client.app.state.outputs  # type: ignore[attr-defined]
    loaded, pixels, forward = _reference(client, image)
    assert outputs.cached_logits(loaded, image) is None
    body = client.get(f"/api/models/{MODEL}/images/{image}/adversarial.json", params={"epsilon": 4}).json()
    filed = outputs.cached_logits(loaded, image)
    assert filed is not None, "the attack's clean pass filed the prediction"
    with torch.no_grad():
        plain = loaded.module(client.app.state.inputs.batch(loaded, image))[0]  # type: ignore[attr-defined]
    assert float((filed - plain).abs().max()) <= TOL
    probs = torch.softmax(plain, -1)
    for row in body["before"]:
        assert row["probability"] == pytest.approx(float(probs[row["index"]]), abs=TOL)


@pytest.mark.parametrize("query", [{"attack": "fgsm"}, {"attack": "pgd", "steps": 3, "step_size": 2}])
def test_the_smallest_flipping_epsilon_is_searched_only_when_asked_and_is_the_first_flip(client, shared_data, query):
    image = _upload(client, shared_data, "cat.jpg")
    experiments = client.app.state.experiments  # type: ignore[attr-defined]
    loaded = client.app.state.runtime.load(MODEL)  # type: ignore[attr-defined]
    base = f"/api/models/{MODEL}/images/{image}"
    first = client.get(f"{base}/adversarial.json", params={**query, "epsilon": 2}).json()
    assert first["min_flip_known"] is False and first["min_flip_epsilon"] is None
    spec = AttackSpec(query["attack"], 2, query.get("steps", 1), query.get("step_size", 1))
    assert experiments.cached_min_flip(loaded, image, spec) == (False, None), "not searched by the attack"
    found = client.get(first["urls"]["min_flip"]).json()["min_flip_epsilon"]
    assert found is not None, "an attack of at most 16/255 flips LeNet-5 on a photo"
    tops = [client.get(f"{base}/adversarial.json", params={**query, "epsilon": e}).json()["after"][0]["index"]
            for e in range(0, found + 1)]
    assert all(t == tops[0] for t in tops[:-1]) and tops[-1] != tops[0]
    again = client.get(f"{base}/adversarial.json", params={**query, "epsilon": 2}).json()
    assert again["min_flip_known"] and again["min_flip_epsilon"] == found
    inline = client.get(f"{base}/adversarial.json", params={**query, "epsilon": 3, "min_flip": "true"}).json()
    assert inline["min_flip_known"] and inline["min_flip_epsilon"] == found
