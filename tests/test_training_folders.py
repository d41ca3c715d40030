"""Issue 24's remaining training sources: a named image folder (``folder:NAME``) as the data, a models-file model
as the architecture, and the epoch-0 checkpoint. The folder is MNIST digits written as PNGs here (from
../shared/data), the models-file model a small factory CNN written here. Numbers the app shows are checked
against plain PyTorch on the checkpoint files and the PNGs."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from torch import nn

from models.datasets import mnist
from models.training import folders
from models.training.config import ConfigError, for_architecture
from models.training.plan import Sources, plan
from server.cli import main as cli_main
from server.main import create_app
from server.settings import Settings
from tests.harness import REPO_ROOT, SHARED_DATA, wait_until
from tests.training_support import events_until_end, workers

pytestmark = pytest.mark.skipif(not (SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz").is_file(),
                                reason="../shared/data/mnist is not present")
DIGITS = {"zero": 0, "one": 1, "seven": 7}  # subfolder → MNIST label
PER_CLASS = 40
FACTORY = '''
from torch import nn


def build(classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(32, classes))
'''


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A digits folder (3 classes × 40 MNIST test digits as PNGs), a one-class folder, a flat folder, and a
    models file with a 28×28 factory CNN (10 outputs, trained-looking weights saved) and a 96×96 one."""
    root = tmp_path_factory.mktemp("folders")
    images, labels = mnist.load_mnist_test(SHARED_DATA)
    for name, digit in DIGITS.items():
        (root / "digits" / name).mkdir(parents=True)
        for i, index in enumerate(np.flatnonzero(labels == digit)[:PER_CLASS]):
            Image.fromarray(images[index]).save(root / "digits" / name / f"{i:03d}.png")
    (root / "single" / "zero").mkdir(parents=True)
    (root / "flat").mkdir()
    for i in range(5):
        Image.fromarray(images[i]).save(root / "single" / "zero" / f"{i}.png")
        Image.fromarray(images[i]).save(root / "flat" / f"{i}.png")
    module = f"tinynets_{root.name.replace('-', '_')}"
    (root / f"{module}.py").write_text(FACTORY)
    torch.manual_seed(5)
    torch.save(factory(root / f"{module}.py")(10).state_dict(), root / "tiny.pt")
    (root / "models.toml").write_text(textwrap.dedent(f'''
        [[model]]
        id = "tiny-digits"
        factory = "{module}:build"
        input = {{ channels = 1, height = 28, width = 28 }}
        weights = "tiny.pt"

        [[model]]
        id = "tiny-big"
        factory = "{module}:build"
        input = {{ channels = 1, height = 96, width = 96 }}
    '''))
    return {"root": root, "digits": root / "digits", "single": root / "single", "flat": root / "flat",
            "models_file": root / "models.toml", "factory": root / f"{module}.py"}


def factory(path: Path):  # noqa: ANN201 - the test's own copy of the user's build()
    spec = importlib.util.spec_from_file_location(f"copy_of_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build


def sources(ws: dict[str, Path], **bounds: int) -> Sources:
    return Sources(data_dir=SHARED_DATA, image_folders={"digits": ws["digits"], "single": ws["single"],
                                                       "flat": ws["flat"]}, models_file=ws["models_file"], **bounds)


def png(path: Path) -> np.ndarray:
    return np.array(Image.open(path).convert("L"), dtype=np.uint8)


def test_a_folder_is_split_per_class_from_the_seed_and_fitted_to_the_network(workspace):
    run = plan(for_architecture("lenet5", dataset="folder:digits", seed=3), sources(workspace))
    assert run.classes == ("one", "seven", "zero") and run.input == (1, 28, 28)
    data = run.load_data(sources(workspace))
    assert len(data.test_y) == 3 * (PER_CLASS // 5) and len(data.train_y) == 3 * (PER_CLASS - PER_CLASS // 5)
    assert np.bincount(data.test_y.numpy()).tolist() == [PER_CLASS // 5] * 3  # 1 in 5 of each class
    listed = run.folder
    train, held = folders.split(np.asarray(listed.labels), 3)
    assert not set(train) & set(held) and len(set(train) | set(held)) == len(listed)
    # the same seed gives the same split; another seed another one
    assert np.array_equal(folders.split(np.asarray(listed.labels), 3)[1], held)
    assert not np.array_equal(folders.split(np.asarray(listed.labels), 4)[1], held)
    # each held-out image is the PNG's pixels (28×28 greyscale fits as it is), labelled by its subfolder
    for row, index in enumerate(held):
        assert np.array_equal(data.test_x[row, 0].numpy(), png(listed.path(int(index))))
        assert data.classes[int(data.test_y[row])] == listed.files[int(index)].parent.name
    # train_size keeps every class's share (the training order is shuffled by the seed)
    small = plan(for_architecture("lenet5", dataset="folder:digits", train_size=30), sources(workspace))
    assert sorted(set(small.load_data(sources(workspace)).train_y.tolist())) == [0, 1, 2]
    # an RGB network reads the same digits as 3×64×64 (centre square, bilinear, as folders.preprocess)
    rgb = plan(for_architecture("tinyvgg-shapes", dataset="folder:digits", augment=False, seed=3), sources(workspace))
    assert rgb.input == (3, 64, 64) and rgb.load_data(sources(workspace)).test_x.shape[1:] == (3, 64, 64)
    picture = Image.open(listed.path(int(held[0])))
    expected = np.asarray(picture.convert("RGB").resize((64, 64), Image.BILINEAR)).transpose(2, 0, 1)
    assert np.array_equal(rgb.load_data(sources(workspace)).test_x[0].numpy(), expected)


def test_a_folder_run_reads_at_most_its_budget_evenly(workspace):
    run = plan(for_architecture("lenet5", dataset="folder:digits"), sources(workspace, folder_max_images=30))
    data = run.load_data(sources(workspace, folder_max_images=30))
    assert len(data.train_y) + len(data.test_y) == 30
    assert np.bincount(np.concatenate([data.train_y.numpy(), data.test_y.numpy()])).tolist() == [10, 10, 10]
    one_file = max(p.stat().st_size for p in workspace["digits"].rglob("*.png"))
    budget = 12 * one_file
    chosen = folders.picks(run.folder, 1_000, budget)
    assert sum(run.folder.path(int(i)).stat().st_size for i in chosen) <= budget and 12 <= len(chosen) < 3 * PER_CLASS
    tight = sources(workspace, folder_max_bytes=budget)
    data = plan(for_architecture("lenet5", dataset="folder:digits"), tight).load_data(tight)
    assert len(data.train_y) + len(data.test_y) == len(chosen)


def test_a_broken_image_is_left_out_not_the_end_of_the_run(workspace, tmp_path):
    """A PNG whose header reads but whose pixels do not (cut short) is left out, and the sentence says so."""
    for name in ("zero", "one"):
        (tmp_path / name).mkdir()
        for source in sorted((workspace["digits"] / name).iterdir())[:6]:
            (tmp_path / name / source.name).write_bytes(source.read_bytes())
    whole = (tmp_path / "one" / "000.png").read_bytes()
    (tmp_path / "one" / "000.png").write_bytes(whole[: len(whole) // 2])
    here = Sources(image_folders={"cut": tmp_path})
    data = plan(for_architecture("lenet5", dataset="folder:cut"), here).load_data(here)
    assert len(data.train_y) + len(data.test_y) == 11 and "1 unreadable left out" in data.train_source


@pytest.mark.parametrize(("changes", "knob", "words"), [
    ({"dataset": "folder:single"}, "dataset", "1 class"),
    ({"dataset": "folder:flat"}, "dataset", "not in class subfolders"),
    ({"dataset": "folder:nowhere"}, "dataset", "no image folder named 'nowhere'"),
    ({"dataset": "cifar10"}, "dataset", "folder:NAME"),
    ({"architecture": "tiny-big", "dataset": "folder:digits"}, "architecture", "96×96"),
    ({"architecture": "no-such-model"}, "architecture", "models file"),
    ({"architecture": "tiny-digits", "dataset": "folder:digits", "batch_norm": True}, "batch_norm", "your own"),
    ({"architecture": "lenet5", "dataset": "folder:digits", "init": "current"}, "init", "folder:digits"),
])
def test_what_cannot_be_trained_here_names_its_knob(workspace, changes, knob, words):
    with pytest.raises(ConfigError) as caught:
        plan(for_architecture(changes.pop("architecture", "lenet5"), **changes), sources(workspace))
    assert caught.value.knob == knob and words in caught.value.message and knob in caught.value.message


def test_a_models_file_model_over_the_budget_is_refused(workspace):
    config = for_architecture("tiny-digits", dataset="folder:digits")
    for bounds in ({"max_parameters": 500}, {"max_flops": 10_000}):
        with pytest.raises(ConfigError, match="architecture: tiny-digits has 730 parameters") as caught:
            plan(config, sources(workspace, **bounds))
        assert caught.value.knob == "architecture"
    parameters = sum(p.numel() for p in factory(workspace["factory"])(10).parameters())
    assert plan(config, sources(workspace)).parameters == parameters  # 10 outputs: its cost as the file builds it


def test_a_models_file_model_starts_from_seeded_reset_or_its_weights_with_a_new_head(workspace):
    build = factory(workspace["factory"])
    fresh = plan(for_architecture("tiny-digits", dataset="folder:digits", seed=11), sources(workspace)).network()
    with torch.random.fork_rng(devices=[]):  # plain PyTorch: build, reset every module, then a new head
        torch.manual_seed(11)
        reference = build(10)
        for module in reference.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        reference[-1] = nn.Linear(32, 3)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), reference.state_dict().values()))
    assert fresh(torch.zeros(1, 1, 28, 28)).shape == (1, 3)
    tuned = plan(for_architecture("tiny-digits", dataset="folder:digits", init="current"), sources(workspace)).network()
    saved = torch.load(workspace["root"] / "tiny.pt", weights_only=True)
    kept = {k: v for k, v in tuned.state_dict().items() if not k.startswith("7.")}
    assert kept and all(torch.equal(v, saved[k]) for k, v in kept.items()) and tuned[7].weight.shape == (3, 32)
    # 10 outputs for MNIST's 10 classes: nothing replaced
    same = plan(for_architecture("tiny-digits", init="current", augment=False), sources(workspace)).network()
    assert all(torch.equal(v, saved[k]) for k, v in same.state_dict().items())


KNOBS = {"epochs": 1, "batch_size": 16, "seed": 2}


@pytest.fixture(scope="module")
def folder_client(workspace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("training")
    settings = Settings(storage_dir=tmp / "images", data_dir=SHARED_DATA, training_dir=tmp / "training",
                        models_file=workspace["models_file"],
                        image_folders={"digits": workspace["digits"], "single": workspace["single"]})
    with TestClient(create_app(settings)) as client:
        yield client
    wait_until(lambda: not workers(), 30, "the lifespan's close to end every worker")


@pytest.mark.parametrize(("body", "knob"), [
    ({"dataset": "folder:single"}, "dataset"), ({"dataset": "folder:nowhere"}, "dataset"),
    ({"dataset": "folder:../etc"}, "dataset"), ({"dataset": "imagenet"}, "dataset"),
    ({"architecture": "tiny-big", "dataset": "folder:digits"}, "architecture"),
    ({"architecture": "resnet18"}, "architecture"),
])
def test_the_api_names_the_knob(folder_client, body, knob):
    answer = folder_client.post("/api/training/runs", json=body)
    assert 400 <= answer.status_code < 500 and knob in answer.json()["error"]["message"], answer.text


def test_a_models_file_model_fine_tuned_on_a_folder_is_a_model_in_every_view(workspace, folder_client, tmp_path):
    """The worker trains the user's model on the folder; run-<id> is labelled with the folder's classes, its
    epoch-0 is the starting network and its predictions equal plain PyTorch on the checkpoint file; and
    `convscope train` gives the same first epoch, bit for bit."""
    body = {"architecture": "tiny-digits", "dataset": "folder:digits", "init": "current", **KNOBS}
    started = folder_client.post("/api/training/runs", json=body)
    assert started.status_code == 201, started.text
    run = started.json()
    events = events_until_end(folder_client, run["id"])
    assert events[-1][1]["state"] == "done", events[-1]
    begun = next(data for kind, data in events if kind in ("started", "snapshot") and data.get("info", data).get("classes"))
    assert begun.get("info", begun)["classes"] == ["one", "seven", "zero"]
    detail = folder_client.get(f"/api/training/runs/{run['id']}").json()
    assert detail["checkpoints"][0] == {"epoch": 0, "step": 0, "weights": "epoch-0"}
    assert [c["weights"] for c in detail["checkpoints"]] == ["epoch-0", "epoch-1"]
    assert folder_client.get(f"/api/models/{run['model']}/classes").json()["classes"] == ["one", "seven", "zero"]

    folder = folder_client.app.state.settings.training_dir / run["model"]
    build = factory(workspace["factory"])
    start, first = (torch.load(folder / f"epoch-{n}.pt", weights_only=True) for n in (0, 1))
    saved = torch.load(workspace["root"] / "tiny.pt", weights_only=True)
    assert all(torch.equal(start[k], saved[k]) for k in saved if not k.startswith("7."))  # fine-tuned from these
    assert start["7.weight"].shape == (3, 32) and not torch.equal(start["0.weight"], first["0.weight"])

    digit = workspace["digits"] / "seven" / "039.png"
    with digit.open("rb") as handle:
        image_id = folder_client.post("/api/images", files={"file": ("7.png", handle.read(), "image/png")}).json()["image_id"]
    base = f"/api/models/{run['model']}/images/{image_id}"
    for name, state in (("epoch-0", start), ("epoch-1", first)):
        model = build(10)
        model[-1] = nn.Linear(32, 3)
        model.load_state_dict(state)
        x = torch.from_numpy(png(digit)).float()[None, None] / 255  # the models file's mean 0, std 1
        with torch.no_grad():
            reference = torch.softmax(model.eval()(x)[0], 0)
        answer = folder_client.get(f"{base}/predictions", params={"weights": name, "top_k": 3})
        assert answer.status_code == 200 and answer.headers["X-ConvScope-Weights"] == name
        for row in answer.json()["predictions"]:
            assert row["label"] == ["one", "seven", "zero"][row["index"]]
            assert row["probability"] == pytest.approx(float(reference[row["index"]]), abs=1e-5)
        for url in (f"{base}/layers/0/activations.npy", f"{base}/layers/0/trace", f"{base}/saliency.png"):
            assert folder_client.get(url, params={"weights": name}).status_code == 200, (url, name)

    out = tmp_path / "cli"
    assert cli_main(["train", "tiny-digits", "--models-file", str(workspace["models_file"]), "--image-folder",
                     f"digits={workspace['digits']}", "--dataset", "folder:digits", "--init", "current", "--epochs", "1",
                     "--batch-size", "16", "--seed", "2", "--data", str(SHARED_DATA), "--out", str(out)]) == 0
    cli = torch.load(out / "tiny-digits.pt", weights_only=True)
    assert list(cli) == list(first) and all(torch.equal(cli[k], first[k]) for k in first)
    metrics = json.loads((out / "tiny-digits.metrics.json").read_text())
    epoch = next(data for kind, data in events if kind == "epoch")
    assert metrics["history"][0]["train_loss"] == epoch["running_loss"]
    assert metrics["classes"] == ["one", "seven", "zero"] and metrics["test_size"] == 3 * (PER_CLASS // 5)


def test_cli_trains_lenet5_on_a_folder_and_its_accuracy_is_plain_pytorch(workspace, tmp_path):
    assert cli_main(["train", "lenet5", "--image-folder", f"digits={workspace['digits']}", "--dataset", "folder:digits",
                     "--epochs", "1", "--batch-size", "16", "--data", str(SHARED_DATA), "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "lenet5.metrics.json").read_text())
    from models.architectures import LeNet5

    model = LeNet5(3)
    model.load_state_dict(torch.load(tmp_path / "lenet5.pt", weights_only=True))
    listed = plan(for_architecture("lenet5", dataset="folder:digits"), sources(workspace)).folder
    _, held = folders.split(np.asarray(listed.labels), 0)
    x = torch.from_numpy(np.stack([png(listed.path(int(i))) for i in held])).float()[:, None] / 255
    with torch.no_grad():
        guesses = model.eval()((x - 0.5) / 0.5).argmax(1).numpy()
    assert metrics["test_correct"] == int((guesses == np.asarray(listed.labels)[held]).sum())
    assert metrics["classes"] == ["one", "seven", "zero"]


def test_a_bundled_architecture_on_a_folder_reads_photos_fitted_to_its_input(workspace, folder_client):
    """TinyVGG on the digits folder: run-<id> reads 3×64×64 (the centre square, bilinear, (x − 0.5) / 0.5) and
    its prediction for a non-square colour photo equals plain PyTorch on the checkpoint file."""
    from models.architectures import TinyVGG

    body = {"architecture": "tinyvgg-shapes", "dataset": "folder:digits", "train_size": 24, **KNOBS}
    started = folder_client.post("/api/training/runs", json=body)
    assert started.status_code == 201, started.text
    run = started.json()
    assert events_until_end(folder_client, run["id"])[-1][1]["state"] == "done"
    model = TinyVGG(3, in_channels=3, size=64)
    model.load_state_dict(torch.load(folder_client.app.state.settings.training_dir / run["model"] / "epoch-1.pt",
                                     weights_only=True))
    photo = Image.open(SHARED_DATA / "images" / "cat.jpg").convert("RGB")
    with (SHARED_DATA / "images" / "cat.jpg").open("rb") as handle:
        image_id = folder_client.post("/api/images", files={"file": ("cat.jpg", handle.read(), "image/jpeg")}).json()["image_id"]
    side = min(photo.size)
    left, top = (photo.width - side) // 2, (photo.height - side) // 2
    square = photo.crop((left, top, left + side, top + side)).resize((64, 64), Image.BILINEAR)
    x = (torch.from_numpy(np.array(square)).permute(2, 0, 1).float()[None] / 255 - 0.5) / 0.5
    with torch.no_grad():
        reference = torch.softmax(model.eval()(x)[0], 0)
    answer = folder_client.get(f"/api/models/{run['model']}/images/{image_id}/predictions",
                               params={"weights": "epoch-1", "top_k": 3})
    assert answer.status_code == 200, answer.text
    for row in answer.json()["predictions"]:
        assert row["label"] == ["one", "seven", "zero"][row["index"]]
        assert row["probability"] == pytest.approx(float(reference[row["index"]]), abs=1e-5)


def test_a_folder_whose_classes_changed_after_start_fails_the_run(workspace, tmp_path):
    """The server labels run-<id> when the run starts; a worker that finds other classes fails the run with
    the reason rather than train a model whose answers would carry the wrong names."""
    config = for_architecture("lenet5", dataset="folder:digits", epochs=1)
    job = {"config": config.as_json(), "run_dir": str(tmp_path), "sources": sources(workspace).as_json(),
           "classes": ["one", "zero"], "threads": 1, "device": "cpu", "point_interval_s": 0.4, "maps_interval_s": 1.0}
    worker = subprocess.Popen([sys.executable, "-m", "server.services.training.worker"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"})
    try:
        worker.stdin.write(json.dumps(job) + "\n")
        worker.stdin.flush()
        events = [json.loads(line) for line in worker.stdout]
    finally:
        worker.stdin.close()
        worker.wait(timeout=60)
    assert events[-1]["type"] == "failed" and "classes changed" in events[-1]["message"], events[-1]
    assert not any(tmp_path.iterdir())  # no checkpoint written


def test_the_run_list_says_what_can_be_trained_here(folder_client):
    answer = folder_client.get("/api/training/runs").json()["choices"]
    architectures = {row["id"]: row for row in answer["architectures"]}
    assert architectures["tiny-digits"] == {"id": "tiny-digits", "title": "tiny-digits", "family": "file",
                                            "input": [1, 28, 28]}
    assert "tiny-big" not in architectures and architectures["lenet5"]["input"] == [1, 28, 28]
    assert {"mnist", "fashion-mnist", "shapes", "folder:digits", "folder:single"} == {d["id"] for d in answer["datasets"]}
    # each models-file network is built and run once to count its cost, not on every visit to the Train view
    costs = folder_client.app.state.training.costs
    counted = costs.stats.computations
    assert counted >= 1 and folder_client.get("/api/training/runs").json()["choices"] == answer
    assert costs.stats.computations == counted
