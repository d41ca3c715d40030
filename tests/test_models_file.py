"""The user's own models from a TOML models file: a torchvision, a timm and a factory entry served side by side;
every bad-entry case listed as unavailable with its reason while the others work; a broken file stops start-up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from models.models_file import ModelsFileError, app_registry, load_models_file
from models.registry import ModelRegistry, default_registry
from server.main import create_app
from server.settings import Settings
from tests.conftest import load_npy, png_bytes
from tests.models_file_support import good_file, make_workspace, write


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with a factory module (on sys.path) and good weights for three architectures."""
    return make_workspace(tmp_path, monkeypatch)


@pytest.fixture
def served(workspace: Path) -> Iterator[tuple[TestClient, Path]]:
    path = write(workspace, good_file(workspace))
    settings = Settings(storage_dir=workspace / "images", models_file=path)
    with TestClient(create_app(settings)) as client:
        yield client, workspace


def states(client: TestClient) -> dict[str, dict]:
    return {m["id"]: m for m in client.get("/api/models").json()["models"]}


def test_torchvision_timm_and_factory_entries_are_all_served(served) -> None:  # type: ignore[no-untyped-def]
    client, folder = served
    models = states(client)
    for model_id in ("my-resnet", "tiny-timm", "small-factory"):
        assert models[model_id]["weights"]["state"] == "local", models[model_id]
        assert models[model_id]["family"] == "file"
    assert "efficientnet_lite0" in models and "lenet5" in models  # the built-in ones stay
    assert models["my-resnet"]["input"] == {"channels": 3, "height": 64, "width": 64}
    assert models["small-factory"]["num_classes"] == 3
    # the default Grad-CAM layer is found: the block holding the last convolution whose output is spatial
    assert models["small-factory"]["default_layer"] == "features"  # conv features.3 and its ReLU, one grid
    assert models["my-resnet"]["default_layer"] == "layer4"  # with its skip connection

    rng = np.random.default_rng(0)
    image_id = client.post("/api/images", files={"file": ("x.png", png_bytes(
        rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)), "image/png")}).json()["image_id"]
    reference = {"small-factory": folder / "small.pt", "my-resnet": folder / "r18.pt", "tiny-timm": folder / "te.pt"}
    for model_id, weights_file in reference.items():
        response = client.get(f"/api/models/{model_id}/images/{image_id}/predictions")
        assert response.status_code == 200, response.text
        assert response.headers["X-ConvScope-Weights"] == "trained"
        labels = {p["label"] for p in response.json()["predictions"]}
        assert labels <= {"cat", "dog", "fox", "owl", "eel", "a", "b", "c", "d", "zero", "one", "two"}
        saliency = client.get(f"/api/models/{model_id}/images/{image_id}/saliency.npy")
        assert saliency.status_code == 200, saliency.text
        # the served weights are the file's, bit for bit
        state = torch.load(weights_file, weights_only=True)
        first = next(k for k in state if k.endswith("weight") and state[k].dim() == 4)
        layer = first.rsplit(".", 1)[0]
        served_w = load_npy(client.get(f"/api/models/{model_id}/layers/{layer}/weights.npy").content)
        assert np.array_equal(served_w, state[first].numpy())
    x = load_npy(client.get(f"/api/models/small-factory/images/{image_id}/input.npy").content)
    assert x.shape == (1, 28, 28) and x.min() >= -1.0 and x.max() <= 1.0  # grey, (x − 0.5)/0.5
    names = [p["label"] for p in client.get(f"/api/models/my-resnet/images/{image_id}/predictions").json()["predictions"]]
    assert set(names) == {"cat", "dog", "fox", "owl", "eel"}


def _bad_entry(folder: Path, case: str) -> tuple[str, str]:
    """(toml for one bad entry, a phrase its reason must contain)."""
    package = f"usernets_{folder.name.replace('-', '_')}"
    base = f'id = "bad"\nfactory = "{package}.small:build"\ninput = {{ channels = 1, height = 28, width = 28 }}\n'
    if case == "missing":
        return base + 'weights = "nowhere.pt"\n', "does not exist"
    if case == "mismatch":
        return base + 'kwargs = { classes = 7 }\nweights = "small.pt"\n', "shape mismatches"
    if case == "wrong_keys":
        return base + 'weights = "r18.pt"\n', "missing keys"
    if case == "torchscript":
        import importlib

        small = importlib.import_module(f"{package}.small")
        import warnings

        with warnings.catch_warnings():  # torch.jit.script is deprecated, which is beside the point here
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(torch.jit.script(small.build()), folder / "scripted.pt")
        return base + 'weights = "scripted.pt"\n', "TorchScript"
    if case == "pickle":
        import importlib

        small = importlib.import_module(f"{package}.small")
        torch.save(small.build(), folder / "whole.pt")
        return base + 'weights = "whole.pt"\n', "run code"
    if case == "no_builder":
        return 'id = "bad"\ntorchvision = "resnet9000"\n', "no model builder"
    if case == "not_a_module":
        return f'id = "bad"\nfactory = "{package}.small:not_a_module"\ninput = {{ channels = 1, height = 28, width = 28 }}\n', "not a torch.nn.Module"
    if case == "labels":
        return base + 'weights = "small.pt"\nlabels = ["only", "two"]\n', "2 classes but the model gives 3"
    raise ValueError(case)


BAD = ["missing", "mismatch", "wrong_keys", "torchscript", "pickle", "no_builder", "not_a_module", "labels"]


@pytest.mark.parametrize("case", BAD)
def test_a_bad_entry_is_unavailable_with_its_reason_and_the_others_work(workspace: Path, case: str) -> None:
    bad, phrase = _bad_entry(workspace, case)
    path = write(workspace, good_file(workspace) + "\n[[model]]\n" + bad)
    with TestClient(create_app(Settings(storage_dir=workspace / "images", models_file=path))) as client:
        models = states(client)
        weights = models["bad"]["weights"]
        assert weights["state"] == "unavailable"
        assert "'bad'" in weights["detail"] and phrase in weights["detail"], weights["detail"]
        for good in ("my-resnet", "tiny-timm", "small-factory"):
            assert models[good]["weights"]["state"] == "local"
        answer = client.get("/api/models/bad")
        if case in ("no_builder", "not_a_module", "labels"):  # nothing to run at all: a clear 409
            assert answer.status_code == 409 and answer.json()["error"]["code"] == "model_unavailable"
            assert phrase in answer.json()["error"]["message"]
        else:  # the architecture runs, untrained, and says so
            assert answer.status_code == 200 and answer.json()["weights_used"] == "untrained"
            trained = client.get("/api/models/bad?weights=trained")
            assert trained.status_code == 409 and phrase in trained.json()["error"]["message"]
    if case == "mismatch":  # the first few mismatched keys are named, with both shapes
        assert "head.2.weight (3, 8) vs (7, 8)" in weights["detail"] and "head.2.bias (3,) vs (7,)" in weights["detail"]
    if case == "pickle":
        assert "state_dict" in weights["detail"]


@pytest.mark.parametrize(("text", "phrase"), [
    ('[[model]]\nid = "x"\ntorchvision = "resnet18"\nwieghts = "a.pt"\n', "entry 1 ('x'), field 'wieghts': unknown field"),
    ('[[model]\nid = "x"\n', "is not valid TOML"),
    ('[[model]]\nid = "Bad Id"\ntorchvision = "resnet18"\n', "field 'id'"),
    ('[[model]]\nid = "x"\ntorchvision = "resnet18"\ntimm = "resnet18"\n', "exactly one of"),
    ('[[model]]\nid = "lenet5"\ntorchvision = "resnet18"\n', "already exists"),
    ('[[model]]\nid = "x"\ntorchvision = "resnet18"\ninput = { channels = 3, height = 0, width = 2 }\n', "field 'input'"),
    ('[[model]]\nid = "x"\nfactory = "nomodule"\ninput = { channels = 1, height = 8, width = 8 }\n', "field 'factory'"),
    ('[[model]]\nid = "x"\ntorchvision = "resnet18"\n[[model]]\nid = "x"\ntimm = "resnet18"\n', "earlier entry"),
])
def test_a_broken_file_stops_start_up_naming_file_entry_and_field(tmp_path: Path, text: str, phrase: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ModelsFileError) as info:
        load_models_file(path, default_registry().copy())
    assert str(path) in str(info.value) and phrase in str(info.value), str(info.value)
    with pytest.raises(ModelsFileError):
        with TestClient(create_app(Settings(storage_dir=tmp_path / "images", models_file=path))):
            pass


def test_env_variable_names_the_models_file(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(workspace, good_file(workspace))
    monkeypatch.setenv("CONVSCOPE_MODELS_FILE", str(path))
    assert Settings().models_file == path
    assert "small-factory" in app_registry(Settings().models_file)


def test_timm_by_name_is_untrained_unless_cached(workspace: Path) -> None:
    path = write(workspace, '[[model]]\nid = "plain-timm"\ntimm = "test_resnet"\n')
    registry = ModelRegistry()
    (entry,) = load_models_file(path, registry)
    status = entry.weights.status()
    assert status.state in ("untrained", "cached")
    if status.state == "untrained":
        assert "not in the local cache" in status.detail
    assert entry.num_classes == 1000 and entry.categories[340] == "zebra"  # ImageNet's names, as torchvision's
