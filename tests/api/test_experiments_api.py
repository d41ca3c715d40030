"""The experiments through the API, each checked against an independent reference on the same input:
ablation against a plain PyTorch forward hook, adversarial examples against Captum's FGSM and PGD, the
occlusion probe against the model run on a patched copy built here, compare against cosines recomputed
from activations.npy. Plus bad input (4xx naming the parameter) and hooks left behind (none)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from captum.robust import FGSM, PGD
from fastapi.testclient import TestClient

from server.main import create_app
from server.settings import Settings
from tests.conftest import load_npy
from tests.harness import assert_no_hooks

TOL = 1e-5


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(storage_dir=tmp_path_factory.mktemp("images"))
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def photo(client: TestClient, shared_data: Path) -> str:
    data = (shared_data / "images" / "cat.jpg").read_bytes()
    return client.post("/api/images", files={"file": ("cat.jpg", data)}).json()["image_id"]


def _loaded(client: TestClient, model: str, weights: str = "auto") -> Any:
    return client.app.state.runtime.load(model, weights)  # type: ignore[attr-defined]


def _input(client: TestClient, model: str, image: str) -> torch.Tensor:
    return torch.from_numpy(load_npy(client.get(f"/api/models/{model}/images/{image}/input.npy").content))[None]


def _probs(rows: list[dict[str, Any]]) -> dict[int, float]:
    return {r["index"]: r["probability"] for r in rows}


ABLATIONS = [
    ("lenet5", "features.0", "3,5", "zero", 1.0),
    ("tinyvgg-shapes", "block1.2", "0,4,7", "mean", 1.0),
    ("efficientnet_lite0", "blocks.4", "1,2,30", "scale", 1.7),
    ("efficientnet_lite0", "conv_stem", "0", "zero", 1.0),
]


@pytest.mark.parametrize(("model", "layer", "channels", "mode", "factor"), ABLATIONS)
def test_ablation_equals_a_forward_hook_editing_the_channels(client, photo, model, layer, channels, mode, factor):
    query = {"layer": layer, "channels": channels, "mode": mode, "factor": factor}
    answer = client.get(f"/api/models/{model}/images/{photo}/ablation.json", params=query)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["recomputed_from"] == "layer"
    loaded = _loaded(client, model)
    x = _input(client, model, photo)
    picked = [int(c) for c in channels.split(",")]
    later_names = [row["name"] for row in body["layers"]]
    modules = dict(loaded.module.named_modules())

    def run(edit: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        seen: dict[str, torch.Tensor] = {}

        def editor(module: Any, inputs: Any, output: torch.Tensor) -> torch.Tensor:
            out = output.clone()
            if mode == "zero":
                out[:, picked] = 0
            elif mode == "mean":
                out[:, picked] = output[:, picked].mean(dim=(2, 3), keepdim=True)
            else:
                out[:, picked] = output[:, picked] * factor
            return out

        handles = [modules[layer].register_forward_hook(editor)] if edit else []
        for name in later_names:
            handles.append(modules[name].register_forward_hook(
                lambda m, i, o, name=name: seen.__setitem__(name, o.detach().clone())))
        try:
            with torch.no_grad():
                logits = loaded.module(x)[0]
        finally:
            for h in handles:
                h.remove()
        return torch.softmax(logits, -1), seen

    edited, edited_layers = run(True)
    plain, plain_layers = run(False)
    for row in body["predictions"]:
        assert row["probability"] == pytest.approx(float(edited[row["index"]]), abs=TOL)
    for row in body["baseline"]:
        assert row["probability"] == pytest.approx(float(plain[row["index"]]), abs=TOL)
    assert later_names, "the answer names the later layers"
    for row in body["layers"]:
        new, old = edited_layers[row["name"]].double(), plain_layers[row["name"]].double()
        expected = float((new - old).norm() / old.norm().clamp(min=1e-12))
        assert row["relative_l2"] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert any(row["relative_l2"] > 0 for row in body["layers"])


def test_ablation_gradcam_is_served_beside_the_unedited_one(client, photo):
    base = f"/api/models/tinyvgg-shapes/images/{photo}"
    body = client.get(f"{base}/ablation.json", params={"layer": "block2.2", "channels": "0,1,2,3,4"}).json()
    new = client.get(body["gradcam"]["npy"].replace("/api", "/api", 1))
    assert new.status_code == 200
    old = client.get(f"{base}/saliency.npy", params={"method": "gradcam"})
    new_map, old_map = load_npy(new.content), load_npy(old.content)
    assert new_map.shape == old_map.shape and 0 <= new_map.min() and new_map.max() <= 1
    assert not np.allclose(new_map, old_map), "silencing five of the CAM layer's channels changes the map"
    png = client.get(body["gradcam"]["png"])
    assert png.headers["content-type"] == "image/png"


def _pixels(loaded: Any, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
    channels = x.shape[1]
    mean = torch.tensor(loaded.preprocess_fn.mean).reshape(1, channels, 1, 1)
    std = torch.tensor(loaded.preprocess_fn.std).reshape(1, channels, 1, 1)
    return (x * std + mean).clamp(0, 1), lambda p: loaded.module((p - mean) / std)


def _layer_outputs(loaded: Any, forward: Any, pixels: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """Each named layer's output (a copy taken as it leaves the layer) in a plain forward pass."""
    outputs: dict[str, torch.Tensor] = {}
    modules = dict(loaded.module.named_modules())
    handles = [modules[name].register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o.detach().clone()))
               for name in names]
    try:
        with torch.no_grad():
            forward(pixels)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


ATTACKS = [
    ("lenet5", {"attack": "fgsm", "epsilon": 6}),
    ("lenet5", {"attack": "pgd", "epsilon": 8, "steps": 4, "step_size": 3, "target": 3}),
    ("tinyvgg-shapes", {"attack": "fgsm", "epsilon": 3, "target": 2}),
    ("tinyvgg-shapes", {"attack": "pgd", "epsilon": 5, "steps": 3, "step_size": 2}),
    ("efficientnet_lite0", {"attack": "fgsm", "epsilon": 2}),
    ("efficientnet_lite0", {"attack": "pgd", "epsilon": 2, "steps": 2, "step_size": 1, "target": 7}),
    ("resnet18", {"attack": "fgsm", "epsilon": 1}),  # ReLU(inplace=True) writes to the batch norms' outputs
]


@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")  # Captum's own note
@pytest.mark.parametrize(("model", "query"), ATTACKS)
def test_adversarial_equals_captum(client, photo, model, query):
    base = f"/api/models/{model}/images/{photo}"
    answer = client.get(f"{base}/adversarial.json", params={**query, "min_flip": "false"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    loaded = _loaded(client, model)
    pixels, forward = _pixels(loaded, _input(client, model, photo))
    targeted = "target" in query
    label = torch.tensor([query["target"] if targeted else int(forward(pixels).argmax())])
    # −log p(label) as a stable cross-entropy: Captum's default −log(softmax) is NaN once a probability
    # underflows to 0 (TinyVGG on a photo has classes at 1e-40), and then moves no pixel
    loss = torch.nn.CrossEntropyLoss(reduction="none")
    if query["attack"] == "fgsm":
        expected = FGSM(forward, loss, lower_bound=0.0, upper_bound=1.0).perturb(
            pixels, query["epsilon"] / 255, label, targeted=targeted)
    else:
        expected = PGD(forward, loss, lower_bound=0.0, upper_bound=1.0).perturb(
            pixels, query["epsilon"] / 255, query["step_size"] / 255, query["steps"], label, targeted=targeted)
    perturbation = load_npy(client.get(f"{base}/adversarial/perturbation.npy", params=query).content)
    assert perturbation.dtype == np.float32 and perturbation.shape == tuple(pixels.shape[1:])
    ours = pixels[0] + torch.from_numpy(perturbation).double().float() / 255.0
    assert float((ours - expected[0]).abs().max()) <= TOL
    assert float(np.abs(perturbation).max()) <= query["epsilon"] + 1e-3
    with torch.no_grad():
        after = torch.softmax(forward(expected)[0], -1)
    for row in body["after"]:
        assert row["probability"] == pytest.approx(float(after[row["index"]]), abs=TOL)
    assert [r["name"] for r in body["layers"]], "a relative L2 per layer over depth"
    names = [r["name"] for r in body["layers"]]
    clean, moved = _layer_outputs(loaded, forward, pixels, names), _layer_outputs(loaded, forward, expected, names)
    for row in body["layers"]:
        old, new = clean[row["name"]].double(), moved[row["name"]].double()
        reference = float(torch.linalg.vector_norm(new - old) / torch.linalg.vector_norm(old).clamp(min=1e-12))
        assert row["relative_l2"] == pytest.approx(reference, rel=1e-4, abs=1e-6), row["name"]
    picture = client.get(f"{base}/adversarial.png", params=query)
    assert picture.headers["content-type"] == "image/png"


def test_min_flip_epsilon_is_the_smallest_slider_step_that_flips(client, photo):
    base = f"/api/models/lenet5/images/{photo}"
    found = client.get(f"{base}/adversarial/min-flip.json", params={"attack": "fgsm"}).json()["min_flip_epsilon"]
    assert found is not None, "an FGSM of at most 16/255 flips LeNet-5 on a photo"
    tops = [client.get(f"{base}/adversarial.json", params={"epsilon": e, "min_flip": "false"}).json()["after"][0]["index"]
            for e in range(0, found + 1)]
    assert all(t == tops[0] for t in tops[:-1]) and tops[-1] != tops[0]
    again = client.get(f"{base}/adversarial.json", params={"epsilon": 1, "min_flip": "false"}).json()
    assert again["min_flip_known"] and again["min_flip_epsilon"] == found


def test_occlusion_probe_equals_the_model_on_a_patched_copy(client, photo):
    model = "tinyvgg-shapes"
    patches = [{"y": 10, "x": 20, "size": 16, "fill": "grey"}, {"y": -4, "x": 56, "size": 12, "fill": "noise"},
               {"y": 30, "x": 0, "size": 20, "fill": "blur"}]
    answer = client.post(f"/api/models/{model}/images/{photo}/occlusion-probe",
                         json={"patches": patches, "classes": [0, 5]})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    loaded = _loaded(client, model)
    pixels, forward = _pixels(loaded, _input(client, model, photo))
    grey = pixels.clone()
    grey[:, :, 10:26, 20:36] = 0.5
    with torch.no_grad():
        expected = torch.softmax(forward(grey)[0], -1)
    for row in results[0]["predictions"]:
        assert row["probability"] == pytest.approx(float(expected[row["index"]]), abs=TOL)
    assert results[0]["classes"][1]["probability"] == pytest.approx(float(expected[5]), abs=TOL)
    assert results[1]["patch"] == {"y": 0, "x": 56, "height": 8, "width": 8, "fill": "noise"}  # clipped
    again = client.post(f"/api/models/{model}/images/{photo}/occlusion-probe", json={"patches": patches[1:2]}).json()
    alone, among = again["results"][0]["predictions"], results[1]["predictions"]
    assert [r["index"] for r in alone] == [r["index"] for r in among], "noise is seeded by the position"
    assert [r["probability"] for r in alone] == pytest.approx([r["probability"] for r in among], abs=TOL)
    shown = client.post(f"/api/models/{model}/images/{photo}/occlusion-probe/map.png",
                        json={"patches": patches, "target": 0})
    assert shown.status_code == 200 and shown.headers["content-type"] == "image/png"
    assert shown.headers["x-convscope-target"] == "0"


def test_compare_cosine_recomputed_from_activations(client, photo):
    base = f"/api/models/lenet5/images/{photo}"
    body = client.get(f"{base}/compare.json", params={"with_model": "lenet5", "with_weights": "untrained"}).json()
    assert body["matched_by"] == "name" and body["with_weights_used"] == "untrained"
    for row in body["layers"][:4]:
        a = load_npy(client.get(f"{base}/layers/{row['name']}/activations.npy").content).astype(np.float64).ravel()
        b = load_npy(client.get(f"{base}/layers/{row['with_name']}/activations.npy",
                                params={"weights": "untrained"}).content).astype(np.float64).ravel()
        assert row["cosine"] == pytest.approx(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))), abs=1e-6)
    other = client.get(f"{base}/compare.json", params={"with_model": "mnist-deep"}).json()
    assert other["matched_by"] == "depth" and other["layers"][0]["with_name"]
    assert other["layers"][-1]["cosine"] is not None  # the two 10-class outputs


BAD = [
    ("GET", "/api/models/lenet5/images/{i}/ablation.json", {"channels": "99"}, None, 404, "channels"),
    ("GET", "/api/models/lenet5/images/{i}/ablation.json", {"channels": "a"}, None, 422, "channels"),
    ("GET", "/api/models/lenet5/images/{i}/ablation.json", {"layer": "nope"}, None, 404, "nope"),
    ("GET", "/api/models/lenet5/images/{i}/ablation.json", {"mode": "scale", "factor": 3}, None, 422, "factor"),
    ("GET", "/api/models/lenet5/images/{i}/adversarial.json", {"epsilon": 17}, None, 422, "epsilon"),
    ("GET", "/api/models/lenet5/images/{i}/adversarial.json", {"target": 10}, None, 404, "target"),
    ("GET", "/api/models/lenet5/images/{i}/adversarial.json", {"attack": "pgd", "steps": 99}, None, 422, "steps"),
    ("POST", "/api/models/lenet5/images/{i}/occlusion-probe", None, {"patches": [{"y": 0, "x": 0, "size": 40}]},
     422, "patches[0].size"),
    ("POST", "/api/models/lenet5/images/{i}/occlusion-probe", None, {"patches": [{"y": 30, "x": 0, "size": 4}]},
     422, "patches[0].y"),
    ("POST", "/api/models/lenet5/images/{i}/occlusion-probe", None,
     {"patches": [{"y": 0, "x": 0, "size": 4}], "classes": [10]}, 404, "classes[0]"),
    ("GET", "/api/models/lenet5/images/{i}/compare.json", {"with_model": "efficientnet_lite0"}, None, 422, "with_model"),
    ("GET", "/api/models/lenet5/images/{i}/compare.json", {"with_model": "nope"}, None, 404, "nope"),
]


@pytest.mark.parametrize(("method", "path", "query", "body", "status", "named"), BAD)
def test_bad_input_is_a_4xx_naming_the_parameter(client, photo, method, path, query, body, status, named):
    answer = client.request(method, path.format(i=photo), params=query, json=body)
    assert answer.status_code == status, answer.text
    assert named in answer.json()["error"]["message"]


def test_no_hook_is_left_behind(client, photo):
    for model in ("lenet5", "tinyvgg-shapes"):
        base = f"/api/models/{model}/images/{photo}"
        client.get(f"{base}/ablation.json", params={"channels": "1", "mode": "mean"})
        client.get(f"{base}/adversarial.json", params={"attack": "pgd", "epsilon": 3, "steps": 2, "min_flip": "false"})
        client.get(f"{base}/compare.json", params={"with_model": model, "with_weights": "untrained"})
        client.get(f"{base}/ablation/gradcam.npy", params={"channels": "0"})
        assert_no_hooks(_loaded(client, model).module)


def test_every_experiment_works_on_a_models_file_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_data: Path) -> None:
    """A factory model from a TOML models file (as tests/test_models_file.py makes one): ablation equals the
    forward hook, FGSM equals Captum, the probe and the comparison with its untrained self answer."""
    from models.models_file import app_registry
    from tests.models_file_support import good_file, make_workspace, write

    folder = make_workspace(tmp_path, monkeypatch)
    registry = app_registry(write(folder, good_file(folder)))
    settings = Settings(storage_dir=tmp_path / "images")
    with TestClient(create_app(settings, registry)) as client:
        data = (shared_data / "images" / "cat.jpg").read_bytes()
        image = client.post("/api/images", files={"file": ("cat.jpg", data)}).json()["image_id"]
        base = f"/api/models/small-factory/images/{image}"
        body = client.get(f"{base}/ablation.json", params={"layer": "features.3", "channels": "0,5", "mode": "zero"}).json()
        assert body["recomputed_from"] == "layer"
        loaded = _loaded(client, "small-factory")
        x = _input(client, "small-factory", image)
        handle = loaded.layer("features.3").register_forward_hook(lambda m, i, o: torch.index_fill(o, 1, torch.tensor([0, 5]), 0.0))
        with torch.no_grad():
            edited = torch.softmax(loaded.module(x)[0], -1)
        handle.remove()
        for row in body["predictions"]:
            assert row["probability"] == pytest.approx(float(edited[row["index"]]), abs=TOL)
        attack = client.get(f"{base}/adversarial.json", params={"epsilon": 5, "min_flip": "false"})
        assert attack.status_code == 200, attack.text
        pixels, forward = _pixels(loaded, x)
        label = torch.tensor([int(forward(pixels).argmax())])
        with pytest.warns(UserWarning, match="did not already require gradients"):
            expected = FGSM(forward, torch.nn.CrossEntropyLoss(reduction="none"), lower_bound=0.0, upper_bound=1.0
                            ).perturb(pixels, 5 / 255, label)
        delta = load_npy(client.get(f"{base}/adversarial/perturbation.npy", params={"epsilon": 5}).content)
        assert float((pixels[0] + torch.from_numpy(delta) / 255.0 - expected[0]).abs().max()) <= TOL
        probe = client.post(f"{base}/occlusion-probe", json={"patches": [{"y": 4, "x": 4, "size": 10, "fill": "noise"}]})
        assert probe.status_code == 200 and len(probe.json()["results"]) == 1
        compare = client.get(f"{base}/compare.json", params={"with_model": "small-factory", "with_weights": "untrained"}).json()
        assert compare["matched_by"] == "name" and all(r["cosine"] is not None for r in compare["layers"])
