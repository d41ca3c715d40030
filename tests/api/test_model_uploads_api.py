"""POST /api/models: an ONNX model dropped into the page works in every view (layers, filters, feature maps,
Grad-CAM, step-through, network overview, channel examples), its predictions equal onnxruntime's; it is listed
only to its uploader; quotas, the loopback rule and hostile files (truncated protobuf, a 2 GB declared
tensor, external data to ../../etc/passwd, 100,000 nodes, a .keras zip bomb, TorchScript, a pickle) each
get a clear 4xx while the server keeps serving."""

from __future__ import annotations

import io
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from server.main import create_app
from server.settings import Settings
from tests.conftest import load_npy, png_bytes
from tests.harness import wait_until
from tests.imported_support import export_torch, onnxruntime_logits

pytest.importorskip("onnxruntime")


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 4)).eval()


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "digits-net.onnx"
    return export_torch(_small_cnn(), torch.zeros(1, 1, 28, 28), path, dynamo=False)


def _settings(tmp: Path, **overrides: object) -> Settings:
    return Settings(storage_dir=tmp / "images", channel_cache_dir=tmp / "channels", channel_examples_batch=500,
                    channel_examples_max_k=4, **overrides)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(tmp_path_factory.mktemp("uploads")))) as test_client:
        yield test_client


def _upload(client: TestClient, data: bytes, name: str, labels: bytes | None = None):  # noqa: ANN202 - Response
    files = {"file": (name, data, "application/octet-stream")}
    if labels is not None:
        files["labels"] = ("labels.txt", labels, "text/plain")
    return client.post("/api/models", files=files)


@pytest.fixture(scope="module")
def uploaded(client: TestClient, small_onnx: Path) -> dict:
    answer = _upload(client, small_onnx.read_bytes(), "digits-net.onnx", b"zero\none\ntwo\nthree\n")
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_an_uploaded_onnx_model_works_in_every_view(client: TestClient, small_onnx: Path, uploaded: dict) -> None:
    model = uploaded
    model_id = model["id"]
    assert model_id.startswith("upload-") and len(model_id) >= 7 + 32  # 128 random bits
    assert model["title"] == "digits-net" and model["family"] == "upload"
    assert model["input"] == {"channels": 1, "height": 28, "width": 28} and model["num_classes"] == 4
    assert model["weights"]["state"] == "local"
    assert model_id in [m["id"] for m in client.get("/api/models").json()["models"]]

    detail = client.get(f"/api/models/{model_id}").json()
    convs = [layer for layer in detail["layers"] if layer["type"] == "Conv2d"]
    assert [c["onnx_node"] for c in convs] == ["/0/Conv", "/3/Conv"]  # the ONNX names, beside module names
    conv = convs[1]["name"]
    assert detail["default_layer"] == conv

    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255
    image_id = client.post("/api/images", files={"file": ("d.png", png_bytes(digit), "image/png")}).json()["image_id"]
    base = f"/api/models/{model_id}/images/{image_id}"
    predictions = client.get(f"{base}/predictions").json()["predictions"]
    model_input = load_npy(client.get(f"{base}/input.npy").content)
    logits = onnxruntime_logits(small_onnx, model_input[None])[0]
    reference = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    top = predictions[0]
    assert top["label"] == ["zero", "one", "two", "three"][int(reference.argmax())]
    assert abs(top["probability"] - float(reference.max())) < 1e-4  # onnxruntime is the reference

    with torch.no_grad():  # the layer's output is the exported network's own (same weights, same input)
        expected = _small_cnn()[:4](torch.from_numpy(model_input)[None])[0].numpy()  # up to the second conv
    activations = load_npy(client.get(f"{base}/layers/{conv}/activations.npy").content)
    assert activations.shape == expected.shape and np.abs(activations - expected).max() < 1e-4

    for url in (f"/api/models/{model_id}/layers/{conv}/filters.json", f"/api/models/{model_id}/layers/{conv}/filters.png",
                f"{base}/layers/{conv}/atlas.png", f"{base}/saliency.npy?method=gradcam",
                f"{base}/saliency.png?method=gradcam", f"{base}/layers/{conv}/trace?channel=1&y=5&x=6",
                f"{base}/network.json", f"{base}/overview.json", f"{base}/softmax"):
        assert client.get(url).status_code == 200, (url, client.get(url).text)
    trace = client.get(f"{base}/layers/{conv}/trace", params={"channel": 1, "y": 5, "x": 6}).json()
    assert trace["layer_output"] == pytest.approx(_conv_output(model_input, 1, 5, 6), abs=1e-4)
    assert trace["total"] == pytest.approx(trace["layer_output"], abs=1e-4)  # the sum of products is the output
    saliency = load_npy(client.get(f"{base}/saliency.npy", params={"method": "gradcam"}).content)
    assert saliency.shape[-2:] == (28, 28) and np.isfinite(saliency).all()
    examples = f"/api/models/{model_id}/layers/{conv}/channels/2/examples.json"
    assert client.get(examples, params={"dataset": "shapes", "k": 4}).status_code in (200, 202)


def _conv_output(model_input: np.ndarray, channel: int, y: int, x: int) -> float:
    with torch.no_grad():
        out = _small_cnn()[:4](torch.from_numpy(model_input)[None])
    return float(out[0, channel, y, x])


def test_listed_only_to_the_uploader_but_usable_with_the_id(client: TestClient, uploaded: dict) -> None:
    mine = [m["id"] for m in client.get("/api/models").json()["models"] if m["family"] == "upload"]
    assert mine == [uploaded["id"]]
    other = TestClient(client.app, client=("10.9.8.7", 50000))  # the same running app, another address
    theirs = [m["id"] for m in other.get("/api/models").json()["models"]]
    assert "lenet5" in theirs and not set(mine) & set(theirs)
    assert other.get(f"/api/models/{mine[0]}").status_code == 200  # the id is the key


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 3]


def _two_gb_tensor() -> bytes:
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[512, 1024, 1024], raw_data=b"\0" * 64)  # 2 GiB
    node = helper.make_node("Conv", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _external_passwd() -> bytes:
    weight = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="../../etc/passwd")
    node = helper.make_node("Conv", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _hundred_thousand_nodes() -> bytes:
    nodes = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"]) for i in range(100_000)]
    graph = helper.make_graph(nodes, "deep", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("t100000", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _keras_zip_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("config.json", '{"class_name": "Sequential"}')
        archive.writestr("metadata.json", '{"keras_version": "3.5.0"}')
        with archive.open("model.weights.h5", "w", force_zip64=True) as member:
            block = bytes(16 * 1024 * 1024)
            for _ in range(40):  # 640 MB of zeros, about 0.6 MB compressed
                member.write(block)
    return buffer.getvalue()


def _torchscript() -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated; people still have such files
        torch.jit.save(torch.jit.script(_small_cnn()), buffer)
    return buffer.getvalue()


def _pickled_module() -> bytes:
    buffer = io.BytesIO()
    torch.save(_small_cnn(), buffer)
    return buffer.getvalue()


HOSTILE = {
    "truncated protobuf": (lambda onnx_bytes: _truncated(onnx_bytes), "m.onnx", 422, "corrupt_model"),
    "2 GB declared tensor": (lambda _b: _two_gb_tensor(), "big.onnx", 413, "model_too_large"),
    "external data to ../../etc/passwd": (lambda _b: _external_passwd(), "x.onnx", 422, "external_data_refused"),
    "100,000 nodes": (lambda _b: _hundred_thousand_nodes(), "deep.onnx", 413, "model_too_large"),
    ".keras zip bomb": (lambda _b: _keras_zip_bomb(), "bomb.keras", 413, "model_too_large"),
    "TorchScript archive": (lambda _b: _torchscript(), "net.pt", 415, "unsupported_model_format"),
    "pickled module": (lambda _b: _pickled_module(), "net.pth", 415, "unsupported_model_format"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_model_files_get_a_clear_4xx(case: str, client: TestClient, small_onnx: Path) -> None:
    make, name, status, code = HOSTILE[case]
    answer = _upload(client, make(small_onnx.read_bytes()), name)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code and len(error["message"]) > 20
    if case == "external data to ../../etc/passwd":
        assert "root:" not in answer.text
    assert client.get("/api/models").status_code == 200  # still serving
    assert client.get("/api/health").status_code == 200


def test_uploads_are_off_on_a_network_address_unless_allowed(tmp_path: Path, small_onnx: Path) -> None:
    with TestClient(create_app(_settings(tmp_path, host="0.0.0.0"))) as off:
        answer = _upload(off, small_onnx.read_bytes(), "m.onnx")
        assert answer.status_code == 403
        assert "CONVSCOPE_ALLOW_MODEL_UPLOADS=1" in answer.json()["error"]["message"]


def test_per_client_quota_and_idle_drop(tmp_path: Path, small_onnx: Path) -> None:
    settings = _settings(tmp_path, host="0.0.0.0", allow_model_uploads=True, max_uploaded_models_per_client=1,
                         uploaded_model_idle_s=3.0)
    with TestClient(create_app(settings)) as limited:
        first = _upload(limited, small_onnx.read_bytes(), "m.onnx")
        assert first.status_code == 201, first.text
        second = _upload(limited, small_onnx.read_bytes(), "m.onnx")
        assert second.status_code == 429 and "at once" in second.json()["error"]["message"]
        model_id = first.json()["id"]
        wait_until(lambda: model_id not in [m["id"] for m in limited.get("/api/models").json()["models"]],
                   timeout=60, what="the idle upload to be dropped", poll_s=0.5)
        assert limited.get(f"/api/models/{model_id}").status_code == 404
        assert _upload(limited, small_onnx.read_bytes(), "m.onnx").status_code == 201  # its place is free again


def test_an_uploaded_onnx_file_is_refused_with_its_first_label_count_mismatch(client: TestClient,
                                                                                small_onnx: Path) -> None:
    answer = _upload(client, small_onnx.read_bytes(), "m.onnx", b"only\ntwo\n")
    assert answer.status_code == 422 and "labels names 2 classes" in answer.json()["error"]["message"]



def test_the_experiments_work_on_an_uploaded_onnx_model(client: TestClient, uploaded: dict) -> None:
    """Ablation, occlusion probe, adversarial and compare on a converted model; the ablation checked against a
    plain PyTorch forward hook on the network that was exported (same weights)."""
    model_id = uploaded["id"]
    conv = [layer for layer in client.get(f"/api/models/{model_id}").json()["layers"] if layer["type"] == "Conv2d"][1]
    digit = np.zeros((28, 28), np.uint8)
    digit[8:20, 8:20] = 255
    image_id = client.post("/api/images", files={"file": ("e.png", png_bytes(digit), "image/png")}).json()["image_id"]
    base = f"/api/models/{model_id}/images/{image_id}"
    answer = client.get(f"{base}/ablation.json", params={"layer": conv["name"], "channels": "0,2", "mode": "zero"})
    assert answer.status_code == 200, answer.text
    model_input = torch.from_numpy(load_npy(client.get(f"{base}/input.npy").content))[None]
    net = _small_cnn()
    edit = net[3].register_forward_hook(lambda _m, _i, out: out.index_fill(1, torch.tensor([0, 2]), 0.0))
    try:
        with torch.no_grad():
            reference = torch.softmax(net(model_input), 1)[0]
    finally:
        edit.remove()
    for row in answer.json()["predictions"]:
        assert row["probability"] == pytest.approx(float(reference[row["index"]]), abs=1e-5)
    probe = client.post(f"{base}/occlusion-probe", json={"patches": [{"y": 4, "x": 4, "size": 8, "fill": "grey"}]})
    assert probe.status_code == 200 and len(probe.json()["results"]) == 1, probe.text
    attack = client.get(f"{base}/adversarial.json", params={"attack": "fgsm", "epsilon": 4, "min_flip": "false"})
    assert attack.status_code == 200 and attack.json()["after"], attack.text
    compared = client.get(f"{base}/compare.json", params={"with_model": "lenet5"})
    assert compared.status_code == 200 and compared.json()["layers"], compared.text
