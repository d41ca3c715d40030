"""Recording layer outputs without copies where nothing writes to them: learned from a copying pass, and a
wrong guess is seen (the version counter of an output kept as returned moved)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from server.services.experiments.layer_changes import LayerChanges
from server.services.runtime.hooks import recording_hooks


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4).eval(), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 3)).eval()


def _record(model: nn.Module, x: torch.Tensor, copy: set[str] | None) -> LayerChanges:
    changes = LayerChanges(model, ["0", "1", "2", "3"], copy=copy)
    with recording_hooks(model, changes.hooks()), torch.no_grad():
        model(x)
    return changes


def test_a_copying_pass_learns_which_outputs_are_written_in_place() -> None:
    model, x = _model(), torch.randn(1, 3, 8, 8)
    copying = _record(model, x, None)
    assert copying.changed_in_place() == {"1"}, "the in-place ReLU writes to the batch norm's output"
    assert copying.trustworthy()
    with torch.no_grad():
        expected = model[1](model[0](x))
    assert torch.equal(copying.outputs["1"], expected), "the copy is the batch norm's output, before the ReLU"
    assert (copying.outputs["1"] < 0).any()


def test_trusting_the_learned_layers_gives_the_same_outputs_and_a_wrong_guess_is_seen() -> None:
    model, x = _model(), torch.randn(1, 3, 8, 8)
    copying = _record(model, x, None)
    trusting = _record(model, x, copying.changed_in_place())
    assert trusting.trustworthy()
    assert all(torch.equal(trusting.outputs[n], copying.outputs[n]) for n in copying.outputs)
    assert not _record(model, x, set()).trustworthy(), "the batch norm's output was kept and then overwritten"


def test_the_changes_of_a_second_pass_are_relative_l2() -> None:
    model, x, y = _model(), torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8)
    base = _record(model, x, None)
    moved = LayerChanges(model, ["0", "1", "2", "3"], base.outputs)
    with recording_hooks(model, moved.hooks()), torch.no_grad():
        model(y)
    with torch.no_grad():
        a1, b1 = model[1](model[0](x)), model[1](model[0](y))
    reference = float(torch.linalg.vector_norm(b1 - a1) / torch.linalg.vector_norm(a1))
    assert dict(moved.ordered_changes())["1"] == pytest.approx(reference, rel=1e-5)
