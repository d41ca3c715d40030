"""Named image folders (issue 20 §6) on a folder of a few hundred crops of the offline photos, made here in a
temporary folder: the listing (class tree and flat), examples.json?dataset=folder:NAME against a plain PyTorch
pass over the same files, the scan budget, resuming a scan after a restart, the model's default dataset,
the count of images the examples come from, and the refusals (unknown name 404, path-like names 422)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import ValidationError

from models.datasets.image_folder import ImageFolder, ImageFolderError, parse_option, scan_folder
from server.main import create_app
from server.services.channels.examples import ChannelExamples, ExampleTable
from server.services.image_folders import ImageFolders
from server.services.runtime.model_runtime import ModelRuntime
from server.settings import Settings
from tests.harness import poll_json, wait_until
from tests.image_folder_support import PER_PHOTO, make_crops

URL = "/api/models/tinyvgg-shapes/layers/block2.3/channels/{channel}/examples.json"


@pytest.fixture(scope="module")
def crops(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    return make_crops(shared_data / "images", tmp_path_factory.mktemp("crops"))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, crops: Path) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("served")
    settings = Settings(storage_dir=tmp / "images", channel_cache_dir=tmp / "channels", channel_examples_max_k=12,
                        image_folders={"crops": crops})
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def wait(client: TestClient, url: str, params: dict, timeout_s: float = 300.0) -> dict:
    def pending(answer: Any) -> None:
        assert answer.json()["progress"]["total"] == answer.json()["source"]["images"]

    return poll_json(lambda: client.get(url, params=params), timeout_s, f"{url} to be ready", pending)


# --- the listing --------------------------------------------------------------------------------------------

def test_a_class_tree_is_listed_class_by_class(crops: Path) -> None:
    folder = scan_folder("crops", crops, max_files=10_000)
    assert folder.layout == "classes" and len(folder) == 9 * PER_PHOTO
    assert folder.classes == ("astronaut", "cat", "chelsea", "coffee", "dog", "pizza", "rocket", "shuttle", "zebra")
    assert folder.files[0] == Path("astronaut/000.png") and folder.labels[PER_PHOTO] == 1
    assert folder.load(5).size == (96, 96) and folder.load(5).mode == "RGB"
    bounded = scan_folder("crops", crops, max_files=50)
    assert len(bounded) == 50 and bounded.truncated == 9 * PER_PHOTO - 50 and bounded.files == folder.files[:50]
    assert bounded.fingerprint != folder.fingerprint


def test_a_flat_folder_skips_broken_files_and_odd_names(tmp_path: Path) -> None:
    for i in range(3):
        Image.new("RGB", (20, 10), (i * 80, 0, 0)).save(tmp_path / f"{i}.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes((tmp_path / "0.png").read_bytes())
    folder = scan_folder("flat", tmp_path, max_files=100)
    assert folder.layout == "flat" and len(folder) == 3 and folder.skipped == 1 and folder.classes == (tmp_path.name,)
    before = folder.fingerprint
    Image.new("RGB", (20, 10)).save(tmp_path / "3.png")
    assert scan_folder("flat", tmp_path, max_files=100).fingerprint != before
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageFolderError, match="no readable"):
        scan_folder("empty", tmp_path / "empty", max_files=5)
    with pytest.raises(ImageFolderError, match="not a folder"):
        scan_folder("missing", tmp_path / "missing", max_files=5)


def test_names_are_checked_everywhere(crops: Path, tmp_path: Path) -> None:
    assert parse_option(f"pets={crops}") == ("pets", crops)
    for bad in ("../etc=/etc", "a/b=/tmp", "=/tmp", "pets", ".hidden=/tmp", "x" * 41 + "=/tmp"):
        with pytest.raises(ImageFolderError):
            parse_option(bad)
    with pytest.raises(ValidationError):
        Settings(storage_dir=tmp_path, image_folders={"../up": crops})
    with pytest.raises(ImageFolderError):
        ImageFolders({"a b": crops}, 10, 1000)


# --- examples from a folder ------------------------------------------------------------------------------------

def reference_maxima(folder: ImageFolder, channel: int) -> np.ndarray:
    """Every image of the folder through a fresh TinyVGG (plain PyTorch, hooks of our own): channel maxima."""
    loaded = ModelRuntime(torch.device("cpu")).load("tinyvgg-shapes", "auto")
    captured: list[torch.Tensor] = []
    handle = dict(loaded.module.named_modules())["block2.3"].register_forward_hook(
        lambda _m, _i, out: captured.append(out[:, channel].flatten(1).amax(1)))
    try:
        with torch.no_grad():
            for lo in range(0, len(folder), 100):
                loaded.module(torch.stack([loaded.preprocess(Image.open(folder.path(i)).convert("RGB"))
                                           for i in range(lo, min(len(folder), lo + 100))]))
    finally:
        handle.remove()
    return torch.cat(captured).numpy()


def test_examples_from_a_folder_equal_a_plain_pytorch_pass(client: TestClient, crops: Path) -> None:
    body = wait(client, URL.format(channel=3), {"dataset": "folder:crops", "k": 9})
    assert body["images"] == 9 * PER_PHOTO
    assert body["source"] == {"name": "folder:crops", "images": 9 * PER_PHOTO, "of": 9 * PER_PHOTO,
                              "description": f"the {9 * PER_PHOTO} images of folder 'crops' in 9 classes"}
    maxima = reference_maxima(scan_folder("crops", crops, 10_000), 3)
    values = [e["value"] for e in body["examples"]]
    assert values == pytest.approx(sorted(maxima.tolist(), reverse=True)[:9], rel=1e-4, abs=1e-5)
    for e in body["examples"]:
        assert e["value"] == pytest.approx(float(maxima[e["index"]]), rel=1e-4, abs=1e-5)
        assert e["sample_id"] is None
    crop = client.get(URL.format(channel=3).replace("examples.json", f"examples/{body['examples'][0]['index']}.png"),
                      params={"dataset": "folder:crops"})
    assert crop.status_code == 200 and crop.headers["content-type"] == "image/png"


def test_unknown_folders_and_path_like_names_are_refused(client: TestClient) -> None:
    answer = client.get(URL.format(channel=0), params={"dataset": "folder:nope"})
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "unknown_image_folder"
    assert "crops" in answer.json()["error"]["message"]
    for bad in ("folder:../crops", "folder:/etc", "folder:a/b", "folder:", "folder:crops/../x"):
        refused = client.get(URL.format(channel=0), params={"dataset": bad})
        assert refused.status_code == 422 and set(refused.json()["error"]) == {"code", "message"}, bad


def test_the_photo_model_uses_the_folder_and_says_where_examples_come_from(client: TestClient,
                                                                           tmp_path: Path) -> None:
    models = {m["id"]: m for m in client.get("/api/models").json()["models"]}
    assert models["efficientnet_lite0"]["examples_dataset"] == "folder:crops"
    assert models["lenet5"]["examples_dataset"] == "mnist" and models["tinyvgg-shapes"]["examples_dataset"] == "shapes"
    # with no folder, the photo model's examples come from the 9 photos, and the answer says so
    settings = Settings(storage_dir=tmp_path / "images", channel_cache_dir=tmp_path / "channels")
    with TestClient(create_app(settings)) as plain:
        assert plain.get("/api/models/efficientnet_lite0").json()["examples_dataset"] == "photos"
        body = wait(plain, "/api/models/efficientnet_lite0/layers/conv_head/channels/7/examples.json", {"k": 3})
        assert body["dataset"] == "photos" and body["images"] == 9
        assert body["source"]["description"] == "the 9 offline gallery photos"


def test_a_models_file_entry_names_its_examples_folder(tmp_path: Path, crops: Path) -> None:
    models_file = tmp_path / "models.toml"
    models_file.write_text(textwrap.dedent('''
        [[model]]
        id = "my-tiny"
        timm = "test_efficientnet"
        kwargs = { num_classes = 9 }
        examples = "folder:crops"
    '''))
    settings = Settings(storage_dir=tmp_path / "images", models_file=models_file, image_folders={"crops": crops})
    with TestClient(create_app(settings)) as served:
        assert served.get("/api/models/my-tiny").json()["examples_dataset"] == "folder:crops"
    models_file.write_text(models_file.read_text().replace("folder:crops", "folder:../crops"))
    from models.models_file import ModelsFileError, load_models_file
    from models.registry import ModelRegistry

    with pytest.raises(ModelsFileError, match="examples"):
        load_models_file(models_file, ModelRegistry())


def test_a_folder_beyond_the_budget_is_scanned_up_to_it(tmp_path: Path, crops: Path) -> None:
    settings = Settings(storage_dir=tmp_path / "images", channel_cache_dir=tmp_path / "channels",
                        image_folders={"crops": crops}, channel_examples_max_pixels=100 * 64 * 64)
    with TestClient(create_app(settings)) as served:
        body = wait(served, URL.format(channel=1), {"dataset": "folder:crops", "k": 3})
    assert body["images"] == 100 and body["source"]["of"] == 9 * PER_PHOTO
    assert body["source"]["description"] == "100 of 306 images of folder 'crops' in 9 classes, spread evenly (the scan budget)"
    assert all(e["index"] < 100 for e in body["examples"])
    # the 100 scanned images cover every class (a class tree is not cut to its first classes)
    folder = scan_folder("crops", crops, 10_000)
    picks = np.linspace(0, len(folder) - 1, 100).round().astype(int)
    assert {folder.labels[i] for i in picks} == set(range(9))
    maxima = reference_maxima(folder, 1)  # index i of the answer is the i-th scanned image: its value says so
    for e in body["examples"]:
        assert e["value"] == pytest.approx(float(maxima[picks[e["index"]]]), rel=1e-4, abs=1e-5)
    assert [e["value"] for e in body["examples"]] == pytest.approx(sorted(maxima[picks], reverse=True)[:3], rel=1e-4)


def test_a_scan_resumes_where_a_stopped_server_left_it(tmp_path: Path, crops: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The first server stops (a crash) after its first checkpoints; the second reads the partial table
    and loads only the images after it; the result equals a scan that was never interrupted."""
    from server.services.work.background_jobs import BackgroundJobs

    runtime = ModelRuntime(torch.device("cpu"))
    loaded = runtime.load("tinyvgg-shapes", "auto")
    layers = [{"name": "block2.3"}]
    loads: list[int] = []
    original = ImageFolder.load
    crash_after = {"n": 120}

    def spying_load(self: ImageFolder, index: int) -> Image.Image:
        loads.append(index)
        if len(loads) > crash_after["n"]:
            raise RuntimeError("the server stopped")
        return original(self, index)

    monkeypatch.setattr(ImageFolder, "load", spying_load)

    def service(cache: Path) -> tuple[ChannelExamples, BackgroundJobs]:
        jobs = BackgroundJobs(4)
        folders = ImageFolders({"crops": crops}, 10_000, 50_000_000)
        return ChannelExamples(jobs, cache, None, max_k=5, max_pixels=10**9, cache_bytes=10**8, batch_size=32,
                               memory_items=2, admit=lambda label, prior: nullcontext(),
                               folders=folders, checkpoint_s=0.0), jobs

    def finish(examples: ChannelExamples) -> ExampleTable:
        found: list[ExampleTable] = []

        def ready() -> bool:
            table, job = examples.table(loaded, "folder:crops", layers)
            if table is not None:
                found.append(table)
                return True
            assert job is not None and job.state in ("queued", "running"), job.as_json()
            return False

        wait_until(ready, timeout=300, what="the example table", poll_s=0.05)
        return found[0]

    first, jobs = service(tmp_path / "cache")
    _, job = first.table(loaded, "folder:crops", layers)
    assert job is not None
    wait_until(lambda: job.state not in ("queued", "running"), timeout=300, what="the stopped scan", poll_s=0.05)
    assert job.state == "failed" and "the server stopped" in job.error
    partial = list((tmp_path / "cache").glob("examples-*.partial.npz"))
    assert len(partial) == 1
    checkpointed = ExampleTable.load(partial[0])
    assert checkpointed is not None and 0 < checkpointed.images <= crash_after["n"]
    jobs.close()

    loads.clear()
    crash_after["n"] = 10**6
    second, jobs2 = service(tmp_path / "cache")
    resumed = finish(second)
    assert min(loads) == checkpointed.images and len(loads) == 9 * PER_PHOTO - checkpointed.images
    assert not list((tmp_path / "cache").glob("examples-*.partial.npz"))
    jobs2.close()

    loads.clear()
    third, jobs3 = service(tmp_path / "fresh")
    whole = finish(third)
    jobs3.close()
    values, indices, _ = whole.layers["block2.3"]
    assert np.array_equal(resumed.layers["block2.3"][1], indices)
    assert np.allclose(resumed.layers["block2.3"][0], values, rtol=1e-5, atol=1e-6)
