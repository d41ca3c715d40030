"""GET /api/samples and GET /api/samples/{id}.png: the gallery's lists and pictures."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from models.datasets import mnist, shapes
from server.main import create_app
from server.settings import Settings
from tests.harness import SHARED_DATA

HAS_MNIST = (SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz").is_file()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    settings = Settings(storage_dir=tmp_path_factory.mktemp("images"), data_dir=SHARED_DATA if HAS_MNIST else None)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _png(response) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(response.content))


def test_shapes_list_cycles_through_classes(client: TestClient) -> None:
    answer = client.get("/api/samples", params={"dataset": "shapes", "count": 20})
    assert answer.status_code == 200
    samples = answer.json()["samples"]
    assert len(samples) == 20
    assert len({s["id"] for s in samples}) == 20
    assert [s["label"] for s in samples[:10]] == list(shapes.CLASSES)
    for s in samples:
        assert s["dataset"] == "shapes"
        assert s["url"] == f"/api/samples/{s['id']}.png"


def test_default_count_is_twelve(client: TestClient) -> None:
    assert len(client.get("/api/samples").json()["samples"]) == 12


def test_shapes_png_is_the_generated_sample_with_its_label(client: TestClient) -> None:
    sample = client.get("/api/samples", params={"dataset": "shapes", "count": 5}).json()["samples"][3]
    image = _png(client.get(sample["url"]))
    index = int(sample["id"].rsplit("-", 1)[1])
    expected, label_index, _ = shapes.sample(index, split="test")
    assert image.size == (64, 64)
    np.testing.assert_array_equal(np.asarray(image.convert("RGB")), np.asarray(expected.convert("RGB")))
    assert sample["label"] == shapes.CLASSES[label_index]


@pytest.mark.skipif(not HAS_MNIST, reason="MNIST test files are not in ../shared/data")
def test_mnist_samples_are_the_test_digits(client: TestClient) -> None:
    samples = client.get("/api/samples", params={"dataset": "mnist", "count": 10}).json()["samples"]
    assert [s["label"] for s in samples] == [str(d) for d in range(10)]
    images, labels = mnist.load_mnist_test(SHARED_DATA)
    for s in samples[:3]:
        index = int(s["id"].rsplit("-", 1)[1])
        assert labels[index] == int(s["label"])
        picture = _png(client.get(s["url"]))
        assert picture.mode == "L" and picture.size == (28, 28)
        np.testing.assert_array_equal(np.asarray(picture), images[index])


def test_mnist_list_is_empty_without_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mnist, "DEFAULT_SHARED_DATA", tmp_path / "nothing")
    monkeypatch.delenv(mnist.ENV_VAR, raising=False)
    settings = Settings(storage_dir=tmp_path / "images", data_dir=tmp_path / "empty")
    with TestClient(create_app(settings)) as local:
        assert local.get("/api/samples", params={"dataset": "mnist"}).json() == {"samples": []}
        missing = local.get("/api/samples/mnist-test-1.png")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "unknown_sample"


@pytest.mark.parametrize(
    "sample_id",
    [
        "shapes-test-999999",
        "shapes-train-1",
        "cats-test-1",
        "shapes-test-01",
        "shapes-test--1",
        "shapes-test-1x",
        "..%2Fsettings",
        "shapes-test-" + "9" * 40,
    ],
)
def test_unknown_sample_ids_are_404(client: TestClient, sample_id: str) -> None:
    answer = client.get(f"/api/samples/{sample_id}.png")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] in ("unknown_sample", "not_found")
    if "%2F" not in sample_id:
        assert answer.json()["error"]["code"] == "unknown_sample"


@pytest.mark.parametrize(
    "params",
    [{"dataset": "cifar"}, {"count": 0}, {"count": 65}, {"count": "lots"}],
)
def test_bad_list_parameters_are_422(client: TestClient, params: dict) -> None:
    answer = client.get("/api/samples", params=params)
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "validation_error"


def test_max_count_is_served(client: TestClient) -> None:
    assert len(client.get("/api/samples", params={"count": 64}).json()["samples"]) == 64


@pytest.mark.skipif(not (SHARED_DATA / "images").is_dir(), reason="offline photos not found")
def test_photos_come_from_the_data_folder_scaled_down(client: TestClient) -> None:
    samples = client.get("/api/samples", params={"dataset": "photos", "count": 64}).json()["samples"]
    on_disk = sorted(p.stem.lower() for p in (SHARED_DATA / "images").iterdir() if p.suffix in (".jpg", ".png"))
    assert [s["label"] for s in samples] == on_disk
    cat = next(s for s in samples if s["label"] == "cat")
    assert cat["id"] == "photos-cat" and cat["dataset"] == "photos"
    picture = _png(client.get(cat["url"]))
    original = Image.open(SHARED_DATA / "images" / "cat.jpg")
    assert max(picture.size) == 512 and picture.mode == "RGB"
    assert abs(picture.size[0] / picture.size[1] - original.size[0] / original.size[1]) < 0.01


@pytest.mark.parametrize("bad", ["photos-LICENSES", "photos-..%2Fmnist", "photos-nope", "photos-", "photos-cat.jpg"])
def test_photo_ids_never_become_paths(client: TestClient, bad: str) -> None:
    response = client.get(f"/api/samples/{bad}.png")
    assert response.status_code == 404
    assert response.json()["error"]["code"] in ("unknown_sample", "not_found")


def test_no_photos_without_a_data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mnist, "find_data_dir", lambda explicit=None: None)
    with TestClient(create_app(Settings(storage_dir=tmp_path / "images"))) as bare:
        assert bare.get("/api/samples", params={"dataset": "photos"}).json() == {"samples": []}
        assert bare.get("/api/samples/photos-cat.png").status_code == 404
