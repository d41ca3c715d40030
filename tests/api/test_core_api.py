"""The stable core of API.md: health, models, weights, uploads, input tensors and predictions."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from models.registry import get_entry


def _npy(content: bytes) -> np.ndarray:
    return np.load(io.BytesIO(content), allow_pickle=False)


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_health(client) -> None:
    body = client.get("/api/health").json()
    assert body["status"] == "ok" and body["device"] == "cpu" and body["version"]


def test_models_lists_bundled_and_torchvision(client) -> None:
    models = {m["id"]: m for m in client.get("/api/models").json()["models"]}
    for model_id in ("lenet5", "mnist-shallow", "mnist-deep", "tinyvgg-shapes"):
        assert models[model_id]["weights"]["state"] == "bundled", models[model_id]["weights"]
        assert models[model_id]["metrics"]["test_accuracy"] > 0.9
    for model_id in ("alexnet", "vgg16", "resnet18", "resnet50", "googlenet", "mobilenet_v3_small",
                     "squeezenet1_1", "densenet121"):
        assert models[model_id]["weights"]["state"] in ("cached", "downloadable"), models[model_id]
        assert models[model_id]["num_classes"] == 1000
        assert models[model_id]["input"] == {"channels": 3, "height": 224, "width": 224}
    assert models["lenet5"]["input"] == {"channels": 1, "height": 28, "width": 28}


def test_model_detail_has_layers_and_totals(client) -> None:
    response = client.get("/api/models/mnist-deep")
    assert response.status_code == 200
    body = response.json()
    model = get_entry("mnist-deep").build(trained=True)
    assert body["total_params"] == sum(p.numel() for p in model.parameters())
    layers = {layer["name"]: layer for layer in body["layers"]}
    assert layers["conv2"]["output_shape"] == [40, 7, 7]
    assert layers["conv2"]["params"] == 40 * 10 * 25 + 40
    assert layers["conv2"]["receptive_field"]["size"] == [13, 13]
    assert body["weights_used"] == "trained" and response.headers["x-convscope-weights"] == "trained"


def test_untrained_variant_is_labelled(client) -> None:
    response = client.get("/api/models/resnet18")
    if response.json()["weights"]["state"] == "downloadable":
        assert response.json()["weights_used"] == "untrained"
        conflict = client.get("/api/models/resnet18?weights=trained")
        assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "weights_unavailable"
    forced = client.get("/api/models/lenet5?weights=untrained")
    assert forced.json()["weights_used"] == "untrained"
    assert forced.headers["x-convscope-weights"] == "untrained"


def test_weights_and_bias_npy_are_the_layer_tensors(client) -> None:
    model = get_entry("lenet5").build(trained=True)
    conv = model.features[3]
    weights = _npy(client.get("/api/models/lenet5/layers/features.3/weights.npy").content)
    bias = _npy(client.get("/api/models/lenet5/layers/features.3/bias.npy").content)
    assert weights.dtype == np.float32 and weights.shape == (16, 6, 5, 5)
    np.testing.assert_array_equal(weights, conv.weight.detach().numpy())
    np.testing.assert_array_equal(bias, conv.bias.detach().numpy())
    grouped = _npy(client.get("/api/models/mobilenet_v3_small/layers/features.1.block.0.0/weights.npy").content)
    assert grouped.shape == (16, 1, 3, 3)  # depthwise: O × I/groups × kh × kw


def test_parameter_errors(client) -> None:
    no_bias = client.get("/api/models/resnet18/layers/conv1/bias.npy")
    assert no_bias.status_code == 404 and no_bias.json()["error"]["code"] == "no_bias"
    missing = client.get("/api/models/lenet5/layers/features.99/weights.npy")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_layer"
    relu = client.get("/api/models/lenet5/layers/features.1/weights.npy")
    assert relu.status_code == 404 and relu.json()["error"]["code"] == "no_weight"
    unknown = client.get("/api/models/nope")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_model"
    bad_variant = client.get("/api/models/lenet5?weights=sometimes")
    assert bad_variant.status_code == 422 and "error" in bad_variant.json()


def test_upload_is_content_addressed(client, shared_data) -> None:
    data = (shared_data / "images" / "cat.jpg").read_bytes()
    first = client.post("/api/images", files={"file": ("cat.jpg", data, "image/jpeg")})
    assert first.status_code == 201
    body = first.json()
    assert body == {"image_id": hashlib.sha256(data).hexdigest(), "width": 640, "height": 426}
    again = client.post("/api/images", files={"file": ("other-name.jpg", data, "image/jpeg")})
    assert again.json() == body
    stored = client.get(f"/api/images/{body['image_id']}")
    assert stored.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(stored.content)).size == (640, 426)


def test_input_npy_is_what_torchvision_transforms_give(client, shared_data) -> None:
    data = (shared_data / "images" / "dog.jpg").read_bytes()
    image_id = client.post("/api/images", files={"file": ("dog.jpg", data, "image/jpeg")}).json()["image_id"]
    served = _npy(client.get(f"/api/models/resnet18/images/{image_id}/input.npy").content)
    transforms = torchvision.models.ResNet18_Weights.DEFAULT.transforms()
    expected = transforms(Image.open(io.BytesIO(data)).convert("RGB")).numpy()
    assert served.shape == (3, 224, 224) and served.dtype == np.float32
    np.testing.assert_allclose(served, expected, atol=1e-6)


def test_predictions_are_softmax_of_the_model_on_input_npy(client, shared_data) -> None:
    data = (shared_data / "images" / "zebra.jpg").read_bytes()
    image_id = client.post("/api/images", files={"file": ("zebra.jpg", data, "image/jpeg")}).json()["image_id"]
    for model_id in ("tinyvgg-shapes", "squeezenet1_1"):
        response = client.get(f"/api/models/{model_id}/images/{image_id}/predictions?top_k=7")
        assert response.status_code == 200
        body = response.json()
        x = torch.from_numpy(_npy(client.get(f"/api/models/{model_id}/images/{image_id}/input.npy").content))
        entry = get_entry(model_id)
        model = entry.build(trained=body["weights_used"] == "trained")
        with torch.no_grad():
            probs = torch.softmax(model(x[None])[0], dim=0)
        top = torch.topk(probs, 7)
        assert [p["index"] for p in body["predictions"]] == top.indices.tolist()
        np.testing.assert_allclose([p["probability"] for p in body["predictions"]], top.values.numpy(), rtol=1e-5)
        assert [p["label"] for p in body["predictions"]] == [entry.categories[i] for i in top.indices.tolist()]
        probabilities = [p["probability"] for p in body["predictions"]]
        assert probabilities == sorted(probabilities, reverse=True)
    default = client.get(f"/api/models/lenet5/images/{image_id}/predictions").json()["predictions"]
    assert len(default) == 5
    # More than the model has (the schema cannot know each model's count): all of them, in order.
    too_many = client.get(f"/api/models/lenet5/images/{image_id}/predictions?top_k=11")
    assert too_many.status_code == 200 and len(too_many.json()["predictions"]) == 10


def test_lenet5_reads_mnist_digits_through_the_api(client, shared_data) -> None:
    from models.datasets.mnist import load_mnist_test

    images, labels = load_mnist_test(shared_data)
    correct = 0
    for i in range(9980, 10000):  # held-out digits, never used in training
        image_id = client.post("/api/images", files={"file": (f"{i}.png", _png(images[i]), "image/png")}).json()["image_id"]
        top = client.get(f"/api/models/lenet5/images/{image_id}/predictions?top_k=1").json()["predictions"][0]
        correct += top["index"] == int(labels[i])
    assert correct >= 18


def test_drawn_digit_on_white_paper_is_inverted_and_centred(client) -> None:
    canvas = np.full((300, 200), 255, dtype=np.uint8)
    canvas[60:240, 90:110] = 0  # a dark "1" on white paper, off-centre and large
    image_id = client.post("/api/images", files={"file": ("one.png", _png(canvas), "image/png")}).json()["image_id"]
    x = _npy(client.get(f"/api/models/lenet5/images/{image_id}/input.npy").content)[0]
    ink = x > 0
    rows, cols = np.nonzero(ink)
    assert x.shape == (28, 28)
    assert 12 <= rows.mean() <= 16 and 12 <= cols.mean() <= 16  # centred by mass like MNIST
    assert rows.max() - rows.min() + 1 == 20  # fitted to MNIST's 20-pixel box
    top = client.get(f"/api/models/lenet5/images/{image_id}/predictions?top_k=1").json()["predictions"][0]
    assert top["label"] == "1"


def test_unknown_image_and_bad_ids(client) -> None:
    ghost = "0" * 64
    response = client.get(f"/api/models/lenet5/images/{ghost}/predictions")
    assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_image"
    for bad in ("..%2F..%2Fetc%2Fpasswd", "ABC", "g" * 64):
        response = client.get(f"/api/models/lenet5/images/{bad}/input.npy")
        assert response.status_code == 404, bad
        assert response.json()["error"]["code"] in ("unknown_image", "not_found")


@pytest.mark.parametrize(
    ("payload", "content_type", "status", "code"),
    [
        (b"", "image/png", 400, "empty_file"),
        (b"plain text, not an image", "image/jpeg", 415, "unsupported_media_type"),
    ],
)
def test_upload_errors(client, payload: bytes, content_type: str, status: int, code: str) -> None:
    response = client.post("/api/images", files={"file": ("x.jpg", payload, content_type)})
    assert response.status_code == status and response.json()["error"]["code"] == code


def test_input_png_undoes_the_normalisation(client) -> None:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    image_id = client.post("/api/images", files={"file": ("s.png", _png(pixels), "image/png")}).json()["image_id"]
    shown = np.asarray(Image.open(io.BytesIO(client.get(f"/api/models/tinyvgg-shapes/images/{image_id}/input.png").content)))
    assert shown.shape == (64, 64, 3)
    assert np.abs(shown.astype(int) - pixels.astype(int)).max() <= 1  # 64×64 in, 64×64 seen: same colours
    grey = client.get(f"/api/models/resnet18/images/{image_id}/input.png")
    seen = np.asarray(Image.open(io.BytesIO(grey.content)))
    x = _npy(client.get(f"/api/models/resnet18/images/{image_id}/input.npy").content)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = np.clip((x.transpose(1, 2, 0) * std + mean) * 255, 0, 255).round()
    assert np.abs(seen.astype(float) - expected).max() <= 1


def test_bundled_weights_say_what_they_were_trained_and_tested_on(client) -> None:
    models = {m["id"]: m for m in client.get("/api/models").json()["models"]}
    for model_id in ("lenet5", "mnist-shallow", "mnist-deep", "tinyvgg-shapes"):
        metrics, detail = models[model_id]["metrics"], models[model_id]["weights"]["detail"]
        assert metrics["train_source"] in detail and metrics["test_set"] in detail
        assert f"{metrics['test_accuracy'] * 100:.2f}%" in detail
