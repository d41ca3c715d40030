"""ONNX files in the models file: converted with onnx2torch after normalisation, predictions equal onnxruntime's
(within 1e-4) for the outputs of several exporters and settings; convolutions stay nn.Conv2d with the ONNX node
names kept as labels; refusals name their cause."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torchvision
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from torch import nn

from models import efficientnet_lite
from tests.imported_support import convscope_outputs, export_torch, keras_module, load_entry, onnxruntime_logits

pytest.importorskip("onnxruntime")
TOLERANCE = 1e-4

EXPORTERS = {
    # torch.onnx.export's default (the dynamo exporter, opset 20 with ReduceMean v18 and Reshape allowzero)
    "dynamo-default": {"dynamo": True},
    # the TorchScript exporter at its defaults (opset 20; Identity v19 and biases behind Identity nodes)
    "legacy-default": {"dynamo": False},
    "legacy-keep-initializers": {"dynamo": False, "keep_initializers_as_inputs": True},
    "legacy-no-constant-folding": {"dynamo": False, "do_constant_folding": False},
    "legacy-opset-13": {"dynamo": False, "opset_version": 13},
}


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(7)
    return torchvision.models.resnet18(weights=None).eval()


@pytest.mark.parametrize("exporter", list(EXPORTERS))
def test_torchvision_resnet18_matches_onnxruntime(exporter: str, resnet18: nn.Module, tmp_path: Path) -> None:
    if exporter.startswith("dynamo") and importlib.util.find_spec("onnxscript") is None:
        pytest.skip("the dynamo exporter needs onnxscript")
    example = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    export_torch(resnet18, example[:1], tmp_path / "resnet18.onnx", **EXPORTERS[exporter])
    entry = load_entry(tmp_path, "onnx", "resnet18.onnx")
    assert entry.weights.status().state == "local", entry.weights.status().detail
    assert (entry.input.channels, entry.input.height, entry.input.width) == (3, 112, 112)  # read from the graph
    model = entry.build(trained=True)
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 20  # every ResNet-18 convolution is an nn.Conv2d the views can hook
    assert entry.target_layer in convs
    batch = example  # every exporter fixed the batch size to 1 here; ConvScope frees it
    ours = convscope_outputs(entry, batch)
    reference = np.concatenate([onnxruntime_logits(tmp_path / "resnet18.onnx", row[None].numpy()) for row in batch])
    difference = float(np.abs(ours - reference).max())
    print(f"{exporter}: max |ConvScope - onnxruntime| = {difference:.2e}")
    assert difference < TOLERANCE
    # the logits are the model's own: the same as torch's on the module that was exported
    with torch.no_grad():
        assert float(np.abs(ours - resnet18(batch).numpy()).max()) < TOLERANCE
    labels = entry.meta["layer_labels"]
    if exporter.startswith("legacy"):
        assert labels["conv1_Conv"] == "/conv1/Conv" and "layer1_0_conv1_Conv" in convs


def test_efficientnet_lite0_matches_onnxruntime_on_a_photo(shared_data: Path, tmp_path: Path) -> None:
    reference_model = efficientnet_lite.build()
    reference_model.load_state_dict(efficientnet_lite.WEIGHTS.load_state_dict())
    photo = efficientnet_lite.preprocess()(Image.open(shared_data / "images" / "zebra.jpg").convert("RGB"))
    batch = photo.unsqueeze(0)
    export_torch(reference_model, batch, tmp_path / "lite0.onnx", dynamo=False)
    entry = load_entry(tmp_path, "onnx", "lite0.onnx")
    ours = convscope_outputs(entry, batch)
    reference = onnxruntime_logits(tmp_path / "lite0.onnx", batch.numpy())
    difference = float(np.abs(ours - reference).max())
    print(f"EfficientNet-Lite0 (legacy export): max |ConvScope - onnxruntime| = {difference:.2e}")
    assert difference < TOLERANCE
    assert entry.categories[int(ours.argmax())] == "zebra"  # the bundled weights, converted, still see a zebra
    assert entry.dataset == "ImageNet-1k"  # 1000 outputs and no labels: ImageNet's names


def test_keras_exported_onnx_matches_onnxruntime(tmp_path: Path) -> None:
    keras = keras_module()
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
                              keras.layers.MaxPooling2D(), keras.layers.Conv2D(16, 3, strides=2, padding="same"),
                              keras.layers.ReLU(), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(5)])
    batch = np.random.default_rng(0).random((3, 32, 32, 3), dtype=np.float32)
    model(batch[:1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's warnings on Keras's shape arithmetic
        model.export(str(tmp_path / "k.onnx"), format="onnx", verbose=False)
    entry = load_entry(tmp_path, "onnx", "k.onnx")
    assert (entry.input.channels, entry.input.height, entry.input.width) == (3, 32, 32)  # from the NHWC graph
    module = entry.build(trained=True)
    assert sum(isinstance(m, nn.Conv2d) for m in module.modules()) == 2
    ours = convscope_outputs(entry, torch.from_numpy(batch).permute(0, 3, 1, 2))
    reference = onnxruntime_logits(tmp_path / "k.onnx", batch)
    difference = float(np.abs(ours - reference).max())
    print(f"Keras-exported ONNX: max |ConvScope - onnxruntime| = {difference:.2e}")
    assert difference < TOLERANCE
    # every convolution's output is N×C×H×W (Keras's transposes sunk and cancelled), bias included
    seen: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda _m, _i, out, n=n: seen.__setitem__(n, out))
               for n, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.ReLU))]
    try:
        with torch.no_grad():
            module(torch.from_numpy(batch).permute(0, 3, 1, 2))
    finally:
        for handle in handles:
            handle.remove()
    first_conv = keras.Model(model.inputs, model.layers[0].output)
    expected = first_conv.predict(batch, verbose=0)  # N×H×W×C
    conv_name = next(n for n, m in module.named_modules() if isinstance(m, nn.Conv2d))
    relu_after = [n for n in seen if n != conv_name and tuple(seen[n].shape) == (3, 8, 32, 32)]
    assert relu_after, {n: tuple(t.shape) for n, t in seen.items()}
    assert float(np.abs(seen[relu_after[0]].permute(0, 2, 3, 1).numpy() - expected).max()) < TOLERANCE


def test_external_data_inside_the_folder_is_read(tmp_path: Path, resnet18: nn.Module) -> None:
    example = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    path = export_torch(resnet18, example, tmp_path / "tmp.onnx", dynamo=False)
    graph = onnx.load(str(path))
    onnx.save(graph, str(tmp_path / "split.onnx"), save_as_external_data=True, location="split.weights",
              size_threshold=1024)
    entry = load_entry(tmp_path, "onnx", "split.onnx")
    reference = onnxruntime_logits(tmp_path / "split.onnx", example.numpy())
    assert float(np.abs(convscope_outputs(entry, example) - reference).max()) < TOLERANCE


def _tiny_graph(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
                initializers: list[onnx.TensorProto]) -> onnx.ModelProto:
    output = helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)
    return helper.make_model(helper.make_graph(nodes, "g", inputs, [output], initializers),
                             opset_imports=[helper.make_opsetid("", 17)])


def _image(name: str = "x") -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3, 8, 8])


def _conv() -> tuple[onnx.NodeProto, onnx.TensorProto]:
    weight = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    return helper.make_node("Conv", ["x", "w"], ["c"], name="conv"), weight


def test_unsupported_operator_is_named(tmp_path: Path) -> None:
    conv, weight = _conv()
    pool = helper.make_node("LpPool", ["c"], ["y"], kernel_shape=[2, 2], name="pool")
    onnx.save(_tiny_graph([conv, pool], [_image()], [weight]), str(tmp_path / "lp.onnx"))
    entry = load_entry(tmp_path, "onnx", "lp.onnx")
    status = entry.weights.status()
    assert status.state == "unavailable" and "LpPool" in status.detail and "onnx2torch" in status.detail


def test_two_image_inputs_are_refused(tmp_path: Path) -> None:
    add = helper.make_node("Add", ["x", "z"], ["y"])
    onnx.save(_tiny_graph([add], [_image("x"), _image("z")], []), str(tmp_path / "two.onnx"))
    status = load_entry(tmp_path, "onnx", "two.onnx").weights.status()
    assert status.state == "unavailable" and "2 inputs" in status.detail and "'z'" in status.detail


def test_external_data_outside_the_folder_is_refused(tmp_path: Path) -> None:
    conv, weight = _conv()
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../../etc/passwd"), ("offset", "0"), ("length", "432")):
        weight.external_data.add(key=key, value=value)
    onnx.save(_tiny_graph([conv], [_image()], [weight]), str(tmp_path / "traversal.onnx"))
    status = load_entry(tmp_path, "onnx", "traversal.onnx").weights.status()
    assert status.state == "unavailable" and "outside the model's folder" in status.detail
    assert "../../etc/passwd" in status.detail
