"""examples.json against a brute-force pass over the dataset, the crop, progress, bounds and errors."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from models.datasets import mnist
from server.main import create_app
from server.services.channels.examples import ChannelTopImages, field_box
from server.settings import Settings
from tests.harness import poll_json


@pytest.fixture(scope="module")
def channel_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("channels")
    settings = Settings(storage_dir=tmp / "images", channel_cache_dir=tmp / "channels", channel_examples_max_k=12,
                        channel_examples_batch=500, feature_vis_steps=12)
    with TestClient(create_app(settings)) as client:
        yield client


def _wait(client: TestClient, url: str, params: dict, timeout_s: float = 240.0) -> dict:
    seen_progress = []

    def get() -> Any:
        answer = client.get(url, params=params)
        assert answer.headers["x-convscope-weights"] in ("trained", "untrained")  # on 202 and 200 alike
        return answer

    def pending(answer: Any) -> None:
        body = answer.json()
        assert body["state"] in ("queued", "running")
        assert answer.headers["Retry-After"]
        seen_progress.append((body["progress"]["done"], body["progress"]["total"]))

    return {**poll_json(get, timeout_s, f"{url} to be ready", pending), "_progress": seen_progress}


def _brute_force(layer_path: list[str], images: np.ndarray, channel: int) -> tuple[np.ndarray, np.ndarray]:
    """Every MNIST test image through a fresh LeNet-5 (plain PyTorch): channel maxima and argmax positions."""
    from server.services.runtime.model_runtime import ModelRuntime

    loaded = ModelRuntime(torch.device("cpu")).load("lenet5", "auto")
    module = loaded.module
    maxima, positions = [], []
    with torch.no_grad():
        for lo in range(0, len(images), 1000):
            x = torch.stack([loaded.preprocess(Image.fromarray(a, mode="L")) for a in images[lo:lo + 1000]])
            out = module.features[: int(layer_path[1]) + 1](x)[:, channel]
            flat = out.reshape(out.shape[0], -1)
            maxima.append(flat.max(dim=1).values.numpy())
            positions.append(flat.argmax(dim=1).numpy())
    return np.concatenate(maxima), np.concatenate(positions)


def test_mnist_examples_equal_brute_force(channel_client, shared_data: Path):
    images, _ = mnist.load_mnist_test(shared_data / "mnist")
    url = "/api/models/lenet5/layers/features.3/channels/5/examples.json"
    body = _wait(channel_client, url, {"dataset": "mnist", "k": 9})
    assert body["images"] == len(images) == 10_000
    maxima, positions = _brute_force(["features", "3"], images, 5)
    examples = body["examples"]
    assert len(examples) == 9
    values = [e["value"] for e in examples]
    assert values == sorted(values, reverse=True)
    # the k largest maxima over the whole dataset (batched vs. other batching may differ in the last bits)
    assert values == pytest.approx(sorted(maxima.tolist(), reverse=True)[:9], rel=1e-5, abs=1e-5)
    for e in examples:
        assert e["value"] == pytest.approx(float(maxima[e["index"]]), rel=1e-5, abs=1e-5)
        assert (e["y"], e["x"]) == divmod(int(positions[e["index"]]), 10)
        assert e["sample_id"] == f"mnist-test-{e['index']}"
    # progress was reported while it ran (or it was done before the first poll)
    for done, total in body["_progress"]:
        assert total == 10_000 and 0 <= done <= total
    # the same table answers another layer and channel at once, also a vector layer
    other = channel_client.get("/api/models/lenet5/layers/classifier.5/channels/3/examples.json",
                               params={"dataset": "mnist", "k": 3})
    assert other.status_code == 200
    with torch.no_grad():
        from server.services.runtime.model_runtime import ModelRuntime

        loaded = ModelRuntime(torch.device("cpu")).load("lenet5", "auto")
        x = torch.stack([loaded.preprocess(Image.fromarray(a, mode="L")) for a in images])
        logits = loaded.module(x)[:, 3].numpy()
    top = np.argsort(-logits, kind="stable")[:3]
    assert [e["index"] for e in other.json()["examples"]] == [int(i) for i in top]
    # the pass left no hook on the app's shared model
    shared = channel_client.app.state.runtime.load("lenet5", "auto").module
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in shared.modules())


def test_crop_is_the_receptive_field_of_the_maximum(channel_client, shared_data: Path):
    url = "/api/models/lenet5/layers/features.3/channels/5/examples.json"
    body = _wait(channel_client, url, {"dataset": "mnist", "k": 2})
    first = body["examples"][0]
    crop = channel_client.get(f"/api/models/lenet5/layers/features.3/channels/5/examples/{first['index']}.png",
                              params={"dataset": "mnist"})
    assert crop.status_code == 200, crop.text
    layer = next(row for row in channel_client.get("/api/models/lenet5").json()["layers"] if row["name"] == "features.3")
    top, left, bottom, right = field_box(layer["receptive_field"], first["y"], first["x"], 28, 28)
    assert crop.headers["X-ConvScope-Box"] == f"{top},{left},{bottom},{right}"
    assert crop.headers["X-ConvScope-Weights"] == body["weights_used"]
    picture = Image.open(io.BytesIO(crop.content))
    assert picture.size == (right - left + 1, bottom - top + 1) == (14, 14)  # LeNet's features.3 sees 14×14
    images, _ = mnist.load_mnist_test(shared_data / "mnist")
    expected = images[first["index"]][top:bottom + 1, left:right + 1]
    assert np.abs(np.asarray(picture, dtype=np.int16) - expected).max() <= 1
    # with context: a 28×28 region (the whole digit: twice the field, clipped), enlarged 4× to 112 px,
    # the 14×14 field outlined in orange at its place
    wide = channel_client.get(f"/api/models/lenet5/layers/features.3/channels/5/examples/{first['index']}.png",
                              params={"dataset": "mnist", "context": "true"})
    assert wide.status_code == 200
    region = np.asarray(Image.open(io.BytesIO(wide.content)).convert("RGB"))
    assert region.shape == (112, 112, 3)
    assert tuple(region[top * 4, left * 4]) == (255, 136, 0)
    assert tuple(region[(bottom + 1) * 4 - 1, (right + 1) * 4 - 1]) == (255, 136, 0)
    inside = region[top * 4 + 2: (bottom + 1) * 4 - 2: 4, left * 4 + 2: (right + 1) * 4 - 2: 4, 0]
    assert np.abs(inside.astype(np.int16) - expected[:inside.shape[0], :inside.shape[1]]).max() <= 1
    # an image that is not one of the channel's examples has no crop
    others = {e["index"] for e in _wait(channel_client, url, {"dataset": "mnist", "k": 12})["examples"]}
    stranger = next(i for i in range(100) if i not in others)
    assert channel_client.get(f"/api/models/lenet5/layers/features.3/channels/5/examples/{stranger}.png",
                              params={"dataset": "mnist"}).status_code == 404


def test_top_k_keeps_the_largest_with_ties_to_the_smaller_index():
    top = ChannelTopImages(channels=1, k=3)
    top.add(np.array([[1.0], [3.0], [3.0]]), np.zeros((3, 1, 2)), start=0)
    top.add(np.array([[3.0], [0.5]]), np.zeros((2, 1, 2)), start=3)
    assert top.indices[0].tolist() == [1, 2, 3]
    assert top.values[0].tolist() == [3.0, 3.0, 3.0]


@pytest.mark.parametrize(("path", "params", "status", "code"), [
    ("lenet5/layers/features.3/channels/16", {"dataset": "mnist"}, 404, "unknown_channel"),
    ("lenet5/layers/features.3/channels/-1", {"dataset": "mnist"}, 422, None),
    ("lenet5/layers/nope/channels/0", {"dataset": "mnist"}, 404, "unknown_layer"),
    ("nope/layers/features.3/channels/0", {"dataset": "mnist"}, 404, None),
    ("lenet5/layers/features.3/channels/0", {"dataset": "imagenet"}, 422, None),
    ("lenet5/layers/features.3/channels/0", {"dataset": "mnist", "k": 13}, 422, "k_too_large"),
    ("lenet5/layers/features.3/channels/0", {"dataset": "mnist", "k": 0}, 422, None),
    ("resnet50/layers/conv1/channels/0", {"dataset": "mnist"}, 422, "too_costly"),
])
def test_bad_requests(channel_client, path, params, status, code):
    answer = channel_client.get(f"/api/models/{path}/examples.json", params=params)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"code", "message"}
    if code:
        assert error["code"] == code


def test_field_box_clips_to_the_image():
    field = {"size": [5, 5], "jump": [1, 1], "start": [0, 0], "whole_image": False}
    assert field_box(field, 0, 0, 28, 28) == (0, 0, 2, 2)
    assert field_box(field, 10, 27, 28, 28) == (8, 25, 12, 27)
    assert field_box({"whole_image": True}, 3, 3, 28, 28) == (0, 0, 27, 27)
