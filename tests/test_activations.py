"""Layer capture and the activation cache, checked against independent forward passes in PyTorch."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from server.errors import ApiError
from server.services.feature_maps.activations import ActivationStore, capture_layers, channel_stats, selectable_layers
from server.services.runtime.architecture_catalog import describe
from server.services.runtime.model_runtime import LoadedModel, ModelRuntime

ATOL = 1e-5


@pytest.fixture(scope="module")
def runtime() -> ModelRuntime:
    return ModelRuntime(torch.device("cpu"), max_loaded=8)


def _picture(loaded: LoadedModel, seed: int = 0) -> torch.Tensor:
    """A random RGB picture through the model's own preprocessing: 1×C×H×W."""
    rng = np.random.default_rng(seed)
    size = (loaded.entry.input.width + 19, loaded.entry.input.height + 7)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    return loaded.preprocess(image).unsqueeze(0)


def _private_copy(loaded: LoadedModel) -> nn.Module:
    """The same weights in a separately built module: the reference never touches the served one."""
    return loaded.entry.build(trained=loaded.variant == "trained")


def _sequential_reference(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Outputs of every module of a model whose forward applies its leaves in registration order
    (flattening before the classifier's first Linear or Dropout), containers ending with their last leaf."""
    outputs: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if not name or any(True for _ in module.children()):
                continue
            if isinstance(module, (nn.Linear, nn.Dropout)) and x.dim() > 2:
                x = torch.flatten(x, 1)
            x = module(x)
            outputs[name] = x.clone()
            parts = name.split(".")
            for k in range(1, len(parts)):
                outputs[".".join(parts[:k])] = x.clone()  # a container's output is its last leaf's
    return outputs


@pytest.mark.parametrize("model_id", ["lenet5", "mnist-shallow", "mnist-deep", "tinyvgg-shapes", "alexnet"])
def test_every_layer_matches_a_sequential_reference(runtime: ModelRuntime, model_id: str) -> None:
    loaded = runtime.load(model_id, "auto")
    x = _picture(loaded)
    captured = capture_layers(loaded, x)
    reference = _sequential_reference(_private_copy(loaded), x)
    names = [name for name, _ in loaded.module.named_modules() if name]
    assert set(captured.outputs) == set(names)
    for name in names:
        np.testing.assert_allclose(captured.outputs[name], reference[name][0].numpy(), atol=ATOL, rtol=1e-5,
                                   err_msg=f"{model_id} {name}")


def _basic_block_reference(block: nn.Module, x: torch.Tensor, prefix: str, out: dict[str, torch.Tensor]) -> torch.Tensor:
    y = block.conv1(x)
    out[f"{prefix}.conv1"] = y
    y = block.bn1(y)
    out[f"{prefix}.bn1"] = y
    y = F.relu(y)
    y = block.conv2(y)
    out[f"{prefix}.conv2"] = y
    y = block.bn2(y)
    out[f"{prefix}.bn2"] = y
    identity = x
    if block.downsample is not None:
        identity = block.downsample[0](x)
        out[f"{prefix}.downsample.0"] = identity
        identity = block.downsample[1](identity)
        out[f"{prefix}.downsample.1"] = identity
        out[f"{prefix}.downsample"] = identity
    y = F.relu(y + identity)
    out[f"{prefix}.relu"] = y  # the block reuses one ReLU; its last call is the block's output
    out[prefix] = y
    return y


def test_resnet18_matches_a_hand_written_forward(runtime: ModelRuntime) -> None:
    loaded = runtime.load("resnet18", "untrained")
    x = _picture(loaded, seed=1)
    captured = capture_layers(loaded, x)
    model = _private_copy(loaded)
    ref: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        y = model.conv1(x)
        ref["conv1"] = y
        y = model.bn1(y)
        ref["bn1"] = y
        y = F.relu(y)
        ref["relu"] = y
        y = model.maxpool(y)
        ref["maxpool"] = y
        for stage in ("layer1", "layer2", "layer3", "layer4"):
            for index, block in enumerate(getattr(model, stage)):
                y = _basic_block_reference(block, y, f"{stage}.{index}", ref)
            ref[stage] = y
        y = model.avgpool(y)
        ref["avgpool"] = y
        ref["fc"] = model.fc(torch.flatten(y, 1))
    names = [name for name, _ in loaded.module.named_modules() if name]
    assert set(ref) == set(names)
    for name in names:
        np.testing.assert_allclose(captured.outputs[name], ref[name][0].numpy(), atol=1e-4, rtol=1e-4, err_msg=name)
    # batch norm outputs have negative values that the in-place ReLU after them must not have erased
    assert captured.outputs["bn1"].min() < 0
    assert captured.calls["layer1.0.relu"] == 2


def _conv_of(module: nn.Conv2d, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        y = F.conv2d(torch.from_numpy(x)[None], module.weight, module.bias, module.stride, module.padding,
                     module.dilation, module.groups)
    return y[0].numpy()


@pytest.mark.parametrize("model_id", ["lenet5", "mnist-deep", "tinyvgg-shapes", "alexnet"])
def test_conv_outputs_follow_from_the_previous_layer(runtime: ModelRuntime, model_id: str) -> None:
    loaded = runtime.load(model_id, "auto")
    x = _picture(loaded, seed=2)
    captured = capture_layers(loaded, x)
    leaves = [(n, m) for n, m in loaded.module.named_modules() if n and not any(True for _ in m.children())]
    checked = 0
    for i, (name, module) in enumerate(leaves):
        if isinstance(module, nn.Conv2d):
            previous = x[0].numpy() if i == 0 else captured.outputs[leaves[i - 1][0]]
            np.testing.assert_allclose(captured.outputs[name], _conv_of(module, previous), atol=ATOL, rtol=1e-5,
                                       err_msg=f"{model_id} {name}")
            checked += 1
    assert checked >= 2


def test_resnet18_convs_follow_from_their_inputs(runtime: ModelRuntime) -> None:
    loaded = runtime.load("resnet18", "untrained")
    x = _picture(loaded, seed=3)
    out = capture_layers(loaded, x).outputs
    modules = dict(loaded.module.named_modules())
    pairs = {
        "conv1": x[0].numpy(),
        "layer1.0.conv1": out["maxpool"],
        "layer1.0.conv2": np.maximum(out["layer1.0.bn1"], 0),  # the block's first ReLU call
        "layer2.0.conv1": out["layer1"],
        "layer2.0.downsample.0": out["layer1"],
        "layer4.1.conv1": out["layer4.0"],
    }
    for name, previous in pairs.items():
        np.testing.assert_allclose(out[name], _conv_of(modules[name], previous), atol=1e-4, rtol=1e-4, err_msg=name)


def test_capture_keeps_only_what_is_asked_and_reduces_the_rest(runtime: ModelRuntime) -> None:
    loaded = runtime.load("lenet5", "auto")
    captured = capture_layers(loaded, _picture(loaded), keep=["features.0"], reduce=lambda _n, a: a.shape)
    assert list(captured.outputs) == ["features.0"]
    assert captured.reduced["features.0"] == (6, 28, 28)
    assert captured.reduced["classifier.4"] == (84,)


def test_other_threads_forward_passes_do_not_leak_into_a_capture(runtime: ModelRuntime) -> None:
    loaded = runtime.load("tinyvgg-shapes", "auto")
    x, other = _picture(loaded, seed=4), _picture(loaded, seed=5)
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            with torch.no_grad():
                loaded.module(other)

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        captures = [capture_layers(loaded, x) for _ in range(5)]
    finally:
        stop.set()
        thread.join()
    reference = _sequential_reference(_private_copy(loaded), x)
    for captured in captures:
        assert captured.calls["block1.0"] == 1
        np.testing.assert_allclose(captured.outputs["block2.4"], reference["block2.4"][0].numpy(), atol=ATOL)


def _store_call(store: ActivationStore, loaded: LoadedModel, layer: str, x: torch.Tensor, image: str = "img") -> np.ndarray:
    layers = selectable_layers(describe(loaded.entry)["layers"])
    return store.get(loaded, image, layer, layers, lambda: x)


def test_store_hits_do_not_run_the_model_again(runtime: ModelRuntime) -> None:
    loaded = runtime.load("lenet5", "auto")
    x = _picture(loaded)
    store = ActivationStore(64 * 1024 * 1024)
    first = _store_call(store, loaded, "features.3", x)
    assert store.captures == 1
    for layer in ("features.3", "features.0", "classifier.5"):  # a small model is captured whole
        _store_call(store, loaded, layer, x)
    assert store.captures == 1
    np.testing.assert_array_equal(first, capture_layers(loaded, x).outputs["features.3"])
    assert not first.flags.writeable


def test_store_stays_within_its_byte_budget_and_keeps_the_requested_layer(runtime: ModelRuntime) -> None:
    loaded = runtime.load("tinyvgg-shapes", "auto")
    layers = selectable_layers(describe(loaded.entry)["layers"])
    budget = 200_000  # about one 10×60×60 float32 map plus a little
    store = ActivationStore(budget)
    x = _picture(loaded)
    reference = capture_layers(loaded, x).outputs
    for image, layer in [("a", "block1.0"), ("b", "block2.2"), ("a", "classifier.1"), ("c", "block1.2")]:
        got = store.get(loaded, image, layer, layers, lambda: x)
        np.testing.assert_array_equal(got, reference[layer])
        assert store.nbytes <= budget
    plan = store.plan(layers, "block2.0")
    assert plan[-1] == "block2.0"  # inserted last, so evicted last
    assert sum(reference[n].nbytes for n in plan) <= budget // 2 or plan == ["block2.0"]


def test_store_runs_one_forward_pass_for_concurrent_requests(runtime: ModelRuntime) -> None:
    loaded = runtime.load("tinyvgg-shapes", "auto")
    store = ActivationStore(64 * 1024 * 1024)
    x = _picture(loaded)
    layers = selectable_layers(describe(loaded.entry)["layers"])
    results: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda n=n: results.append(store.get(loaded, "img", n, layers, lambda: x)))
               for n in ("block1.0", "block1.2", "block2.0", "classifier.1")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    assert store.captures == 1


def test_store_rejects_layers_without_a_feature_map(runtime: ModelRuntime) -> None:
    # an unknown name never reaches the store: server.deps.LayerDep answers 404 unknown_layer (tests/api)
    loaded = runtime.load("lenet5", "auto")
    store = ActivationStore(1 << 20)
    with pytest.raises(ApiError) as info:
        _store_call(store, loaded, "features.99", _picture(loaded))
    assert info.value.status == 422 and info.value.code == "layer_has_no_feature_map"


def test_channel_stats_match_torch() -> None:
    a = np.random.default_rng(0).standard_normal((5, 7, 9)).astype(np.float32)
    stats = channel_stats(a)
    t = torch.from_numpy(a).flatten(1)
    np.testing.assert_allclose(stats["mean"], t.mean(1).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["max"], t.amax(1).numpy())
    np.testing.assert_allclose(stats["min"], t.amin(1).numpy())
    np.testing.assert_allclose(stats["positive_fraction"], (t > 0).float().mean(1).numpy(), rtol=1e-6)


class _SometimesInPlace(nn.Module):
    """Adds 1 in place to its first layer's output, but only for inputs with a positive sum."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3)
        self.b = nn.Conv2d(2, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        z = self.b(y)
        if x.sum() > 0:
            y += 1.0  # overwrites the already recorded output of `a`
        return z + y


def _loaded(module: nn.Module) -> LoadedModel:
    return LoadedModel(entry=None, variant="untrained", module=module.eval(), device=torch.device("cpu"),  # type: ignore[arg-type]
                       preprocess_fn=lambda image: image)


def test_outputs_no_later_operation_touches_are_shared_not_copied(runtime: ModelRuntime) -> None:
    loaded = runtime.load("resnet18", "untrained")
    x = _picture(loaded, seed=6)
    capture_layers(loaded, x)  # learns which outputs later in-place operations overwrite
    second = capture_layers(loaded, x)
    reference = capture_layers(_loaded(_private_copy(loaded)), x).outputs  # a fresh module: copies everything
    for name, array in second.outputs.items():
        np.testing.assert_array_equal(array, reference[name], err_msg=name)
    assert second.outputs["bn1"].min() < 0  # overwritten in place by the ReLU after it: must have been copied


def test_a_shared_output_overwritten_after_all_is_captured_again() -> None:
    torch.manual_seed(0)
    loaded = _loaded(_SometimesInPlace())
    negative = -torch.rand(1, 1, 6, 6)
    positive = torch.rand(1, 1, 6, 6)
    capture_layers(loaded, negative)  # `a` looks untouched here, so the next pass shares it
    captured = capture_layers(loaded, positive)
    with torch.no_grad():
        expected = loaded.module.a(positive)[0].numpy()
    np.testing.assert_allclose(captured.outputs["a"], expected, atol=1e-6)


def test_layer_overviews_are_bounded_by_bytes(runtime: ModelRuntime) -> None:
    from server.services.feature_maps.layer_overview import LayerOverviews, overview_from_summaries
    from server.services.rendering.atlas import summarise_layer

    loaded = runtime.load("tinyvgg-shapes", "auto")
    names = [layer["name"] for layer in selectable_layers(describe(loaded.entry)["layers"])]
    reduced = capture_layers(loaded, _picture(loaded), keep=(), reduce=summarise_layer).reduced
    size = overview_from_summaries(reduced, names).nbytes
    by_count = LayerOverviews(budget_bytes=2 * size + size // 2)  # room for two
    for image in ("a", "b", "c"):
        by_count.adopt(loaded, image, names, reduced)
    assert [by_count.has(loaded, i) for i in ("a", "b", "c")] == [False, True, True]
    one = LayerOverviews(budget_bytes=1)  # too small for any: computed, served, not kept
    for image in ("a", "b"):
        one.adopt(loaded, image, names, reduced)
    assert [one.has(loaded, i) for i in ("a", "b")] == [False, False]
    overview = by_count.get(loaded, "c", names, lambda: _picture(loaded))
    before = overview.nbytes
    assert overview.png.startswith(b"\x89PNG") and overview.nbytes == len(overview.png) != before
