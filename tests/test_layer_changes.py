"""How far each layer moved (relative L2, the adversarial and ablation charts): recorded outputs are copies
taken as they leave the layer (a later in-place ReLU must not change them), and a second pass's change per
layer equals ‖new − old‖ / ‖old‖ recomputed from plain PyTorch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from server.services.experiments.layer_changes import LayerChanges
from server.services.runtime.hooks import recording_hooks

NAMES = ["0", "1", "2", "3"]


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4).eval(), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 3)).eval()


def test_the_changes_of_a_second_pass_are_relative_l2_of_the_outputs_before_in_place_writes() -> None:
    model, x, y = _model(), torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8)
    base = LayerChanges(model, NAMES)
    with recording_hooks(model, base.hooks()), torch.no_grad():
        model(x)
    with torch.no_grad():
        norm_x, norm_y = model[1](model[0](x)), model[1](model[0](y))
    assert torch.equal(base.outputs["1"], norm_x) and (base.outputs["1"] < 0).any(), "the batch norm's output, before the ReLU"
    moved = LayerChanges(model, NAMES, base.outputs)
    with recording_hooks(model, moved.hooks()), torch.no_grad():
        model(y)
    reference = float(torch.linalg.vector_norm(norm_y - norm_x) / torch.linalg.vector_norm(norm_x))
    changes = dict(moved.ordered_changes())
    assert list(changes) == NAMES
    assert changes["1"] == pytest.approx(reference, rel=1e-5)


def test_with_a_gate_only_layers_after_its_first_call_count() -> None:
    model, x = _model(), torch.randn(1, 3, 8, 8)
    watched = ["0", "2", "3"]
    base = LayerChanges(model, watched, after="1")
    with recording_hooks(model, base.hooks()), torch.no_grad():
        model(x)
    assert list(base.outputs) == ["2", "3"], "layer 0 ran before the gate"
    with torch.no_grad():
        head = model[1](model[0](x))
    for opened in (False, True):  # a pass that starts right after the gate (the ablation's split tail)
        moved = LayerChanges(model, watched, base.outputs, after="1")
        if opened:
            moved.start_after_gate()
        with recording_hooks(model, moved.hooks()), torch.no_grad():
            model[3](model[2](head * 2))
        assert [name for name, _ in moved.ordered_changes()] == (["2", "3"] if opened else [])
