"""Traces of conv / pool / activation cells against the layers' own outputs, on a purpose-built model
with the awkward cases: dilation, groups (depthwise), asymmetric 'same', reflect padding, ceil-mode
pools, adaptive pools, batch norm between conv and activation, and a shared module called twice."""
# (PyTorch warns that an even kernel with padding='same' pads a copy: exactly the case we want covered.)

from __future__ import annotations

import itertools
import threading

import pytest
import torch
from torch import nn

from models.registry import InputSpec, ModelEntry
from server.errors import ApiError
from server.services.runtime.model_runtime import LoadedModel
from server.services.step_through import trace as ct
from tests.harness import assert_no_hooks

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")


class Awkward(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pad = nn.ZeroPad2d((1, 2, 0, 1))
        self.conv_dilated = nn.Conv2d(3, 8, 3, stride=2, padding=2, dilation=2)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.LeakyReLU(0.2)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.grouped = nn.Conv2d(8, 6, (2, 3), padding="same", groups=2)
        self.reflect = nn.Conv2d(6, 4, 3, padding=1, padding_mode="reflect")
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.avgpool = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        self.lppool = nn.LPPool2d(2, 2)
        self.adaptive = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.conv_dilated(self.pad(x))))
        x = self.relu(self.depthwise(x))
        x = self.grouped(x)
        x = self.relu(self.reflect(x))  # the shared ReLU again
        x = self.lppool(self.avgpool(self.maxpool(x)))
        x = self.adaptive(x)
        return self.head(x.flatten(1))


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    torch.manual_seed(0)
    module = Awkward()
    with torch.no_grad():  # non-trivial batch-norm statistics
        module.bn.running_mean.uniform_(-0.5, 0.5)
        module.bn.running_var.uniform_(0.5, 2.0)
        module.bn.weight.uniform_(0.5, 1.5)
        module.bn.bias.uniform_(-0.3, 0.3)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    entry = ModelEntry(id="awkward", title="Awkward", dataset="none", family="bundled", input=InputSpec(3, 21, 19),
                       categories=tuple("abcde"), builder=Awkward, make_preprocess=lambda: None,  # type: ignore[arg-type]
                       weights=None, target_layer="reflect")  # type: ignore[arg-type]
    return LoadedModel(entry, "untrained", module, torch.device("cpu"), lambda image: image)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.randn(1, 3, 21, 19, generator=torch.Generator().manual_seed(1))


def reference_outputs(module: nn.Module, batch: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """Every call's output of every leaf, from an independent pass with our own hooks."""
    outs: dict[str, list[torch.Tensor]] = {}
    handles = [m.register_forward_hook(lambda _m, _i, o, n=n: outs.setdefault(n, []).append(o.detach().clone()))
               for n, m in module.named_modules() if n]
    try:
        with torch.no_grad():
            module(batch)
    finally:
        for h in handles:
            h.remove()
    return outs


def _close(a: float, b: float, scale: float) -> bool:
    return abs(a - b) <= 1e-5 * max(abs(b), scale, 1e-6)


@pytest.mark.parametrize("layer", ["conv_dilated", "depthwise", "grouped", "reflect"])
def test_conv_totals_equal_layer_output(loaded: LoadedModel, batch: torch.Tensor, layer: str) -> None:
    ref = reference_outputs(loaded.module, batch)[layer][0][0]
    cap = ct.capture(loaded, batch, loaded.named_layer(layer))
    module = loaded.layer(layer)
    c, h, w = ref.shape
    for ch, y, x in itertools.product(range(c), range(0, h, 2), range(0, w, 3)):
        trace = ct.conv_trace(cap, module, ch, y, x, top=2)
        scale = sum(abs(v) for c_ in trace["channels"] for v in c_["products"]) + abs(trace["rest"]["sum"] if trace["rest"] else 0)
        assert _close(trace["total"], float(ref[ch, y, x]), scale), (ch, y, x)
        assert trace["layer_output"] == float(ref[ch, y, x])
        shown = sum(c_["sum"] for c_ in trace["channels"]) + (trace["rest"]["sum"] if trace["rest"] else 0.0)
        assert shown == pytest.approx(trace["sum_of_channels"], abs=1e-9)


def test_groups_pick_the_right_input_channels(loaded: LoadedModel, batch: torch.Tensor) -> None:
    cap = ct.capture(loaded, batch, loaded.named_layer("grouped"))
    trace = ct.conv_trace(cap, loaded.layer("grouped"), 4, 1, 1, top=8)  # group 1 of 2: inputs 4..7
    assert [c["index"] for c in trace["channels"]] == [4, 5, 6, 7]
    depth = ct.conv_trace(ct.capture(loaded, batch, loaded.named_layer("depthwise")), loaded.layer("depthwise"), 5, 0, 0)
    assert [c["index"] for c in depth["channels"]] == [5] and depth["bias"] == 0.0


def test_dilation_and_padding_cells(loaded: LoadedModel, batch: torch.Tensor) -> None:
    cap = ct.capture(loaded, batch, loaded.named_layer("conv_dilated"))
    trace = ct.conv_trace(cap, loaded.layer("conv_dilated"), 0, 0, 0)
    # stride 2, padding 2, dilation 2: taps at -2, 0, 2 on both axes
    assert trace["cells"][:3] == [[-2, -2], [-2, 0], [-2, 2]]
    assert trace["padding"][:4] == [True, True, True, True]
    for ch in trace["channels"]:  # padding cells read as zero
        assert all(v == 0.0 for v, pad in zip(ch["inputs"], trace["padding"]) if pad)
    # the ZeroPad2d before it is found, and its cells are padding too
    assert trace["padded_by"] == {"layer": "pad", "left": 1, "right": 2, "top": 0, "bottom": 1}
    last_col = ct.conv_trace(cap, loaded.layer("conv_dilated"), 0, 0, cap.output.shape[2] - 1)
    assert any(last_col["padding"])


def test_batch_norm_and_activation_follow(loaded: LoadedModel, batch: torch.Tensor) -> None:
    ref = reference_outputs(loaded.module, batch)
    trace = ct.conv_trace(ct.capture(loaded, batch, loaded.named_layer("conv_dilated")), loaded.layer("conv_dilated"), 3, 2, 1)
    assert [a["layer"] for a in trace["after"]] == ["bn", "act"]
    bn = trace["after"][0]
    by_formula = bn["gamma"] * (trace["layer_output"] - bn["mean"]) / (bn["var"] + bn["eps"]) ** 0.5 + bn["beta"]
    assert by_formula == pytest.approx(bn["output"], rel=1e-5, abs=1e-6)
    assert trace["final"] == float(ref["act"][0][0, 3, 2, 1])
    # the shared in-place ReLU: its *second* call follows `reflect`
    trace = ct.conv_trace(ct.capture(loaded, batch, loaded.named_layer("reflect")), loaded.layer("reflect"), 1, 3, 3)
    assert [a["layer"] for a in trace["after"]] == ["relu"]
    assert trace["final"] == float(ref["relu"][1][0, 1, 3, 3]) == max(trace["layer_output"], 0.0)
    # grouped conv: nothing element-wise follows it
    assert ct.conv_trace(ct.capture(loaded, batch, loaded.named_layer("grouped")), loaded.layer("grouped"), 0, 0, 0)["after"] == []


@pytest.mark.parametrize("layer", ["maxpool", "avgpool", "lppool", "adaptive"])
def test_pool_results_equal_layer_output(loaded: LoadedModel, batch: torch.Tensor, layer: str) -> None:
    ref = reference_outputs(loaded.module, batch)[layer][0][0]
    cap = ct.capture(loaded, batch, loaded.named_layer(layer))
    c, h, w = ref.shape
    for ch, y, x in itertools.product(range(c), range(h), range(w)):
        trace = ct.pool_trace(cap, loaded.layer(layer), ch, y, x)
        assert trace["result"] == pytest.approx(float(ref[ch, y, x]), rel=1e-5, abs=1e-6), (ch, y, x)


def test_activation_trace(loaded: LoadedModel, batch: torch.Tensor) -> None:
    cap = ct.capture(loaded, batch, loaded.named_layer("act"))
    trace = ct.activation_trace(cap, loaded.layer("act"), 2, 1, 1)
    expected = trace["input"] if trace["input"] > 0 else 0.2 * trace["input"]
    assert trace["output"] == pytest.approx(expected, rel=1e-6) and "0.2" in trace["formula"]


def test_softmax_trace() -> None:
    logits = torch.tensor([2.0, 1.0, 0.1, -1.0, 3.0])
    trace = ct.softmax_trace(logits, tuple("abcde"), top=3)
    probs = torch.softmax(logits.double(), 0)
    assert [c["label"] for c in trace["classes"]] == ["e", "a", "b"]
    assert trace["classes"][0]["probability"] == pytest.approx(float(probs[4]), rel=1e-12)
    assert trace["classes"][0]["shifted"] == 0.0
    assert trace["rest"]["classes"] == 2
    assert trace["rest"]["probability"] == pytest.approx(float(probs[2] + probs[3]), rel=1e-9)


def test_hooks_removed_after_normal_and_failed_calls(loaded: LoadedModel, batch: torch.Tensor) -> None:
    ct.capture(loaded, batch, loaded.named_layer("grouped"))
    with pytest.raises(RuntimeError):
        ct.capture(loaded, batch[:, :2], loaded.named_layer("grouped"))  # wrong channel count: the forward raises
    assert_no_hooks(loaded.module)
    assert not loaded.lock.locked()


def test_other_threads_passes_are_not_recorded(loaded: LoadedModel, batch: torch.Tensor) -> None:
    # another request running the shared module while our hooks are in place must not leak in
    other = torch.zeros_like(batch)

    def run_other() -> None:
        with torch.no_grad():
            for _ in range(20):
                loaded.module(other)

    ref = reference_outputs(loaded.module, batch)["grouped"][0][0]  # before the other thread starts
    thread = threading.Thread(target=run_other)
    thread.start()
    for _ in range(5):
        cap = ct.capture(loaded, batch, loaded.named_layer("grouped"))
        assert torch.equal(cap.output, ref)
    thread.join()


def test_bad_positions(loaded: LoadedModel, batch: torch.Tensor) -> None:
    cap = ct.capture(loaded, batch, loaded.named_layer("grouped"))
    for args in ((6, 0, 0), (0, 99, 0), (0, 0, -1)):
        with pytest.raises(ApiError) as info:
            ct.conv_trace(cap, loaded.layer("grouped"), *args)
        assert info.value.status == 404
    with pytest.raises(ApiError) as info:
        ct.layer_trace(ct.capture(loaded, batch, loaded.named_layer("bn")), loaded.layer("bn"), 0, 0, 0, 8)
    assert info.value.status == 422


def test_cache_respects_budget(loaded: LoadedModel, batch: torch.Tensor) -> None:
    cap = ct.capture(loaded, batch, loaded.named_layer("grouped"))
    cache = ct.StepThrough(None, budget_bytes=cap.nbytes * 2 + 1).cache
    for i in range(5):
        cache.put(("m", "v", str(i), "grouped"), cap)
    assert len(cache) == 2 and cache.get(("m", "v", "4", "grouped")) is cap
