"""How far each layer's output moved: one :class:`LayerRecorder` records a pass's layer outputs, another
compares a second pass's outputs with them (relative L2), layer by layer, without keeping the second pass's
outputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from server.services.runtime.hooks import ForwardHook, LayerRecorder


class LayerChanges:
    """Forward hooks (of one :class:`LayerRecorder`) on the named layers of ``model``. Without a ``baseline``
    they record each layer's output (a clone taken as it leaves the layer: later in-place operations must
    not change it); with one they compute each layer's relative L2 change against it. With ``after`` (a
    layer name), only layers that run after that layer's first call count. A layer run twice reports its
    last call."""

    def __init__(self, model: nn.Module, names: Sequence[str], baseline: dict[str, torch.Tensor] | None = None,
                 after: str | None = None, norms: dict[str, float] | None = None) -> None:
        modules = dict(model.named_modules())
        self.watched = [(name, modules[name]) for name in names if name in modules]
        self.baseline = baseline
        self.norms = norms if norms is not None else {}  # ‖baseline output‖₂ per layer, filled on first use
        self.gate = (after, modules[after]) if after is not None else None
        self.recorder = LayerRecorder()

    @property
    def outputs(self) -> dict[str, torch.Tensor]:
        return self.recorder.outputs

    @property
    def changes(self) -> dict[str, float]:
        return self.recorder.changes

    def start_after_gate(self) -> None:
        """For a pass that starts right after the ``after`` layer: every watched layer counts."""
        if self.gate is not None:
            self.recorder.seen(self.gate[0])

    def hooks(self, first: Sequence[tuple[nn.Module, ForwardHook]] = ()) -> list[tuple[nn.Module, ForwardHook]]:
        """The hooks to register (``first`` before them: an editing hook runs before the gate sees its output)."""
        after = self.gate[0] if self.gate is not None else None
        gate = [(self.gate[1], self.recorder.hook(self.gate[0], keep="none"))] if self.gate is not None else []
        if self.baseline is None:
            watch = [(m, self.recorder.hook(n, keep="clone", after=after)) for n, m in self.watched]
        else:
            watch = [(m, self.recorder.hook(n, keep="change", after=after, baseline=self.baseline, norms=self.norms))
                     for n, m in self.watched]
        return [*first, *gate, *watch]

    def ordered_changes(self) -> list[tuple[str, float]]:
        """(layer, relative L2) in the order the baseline pass ran them."""
        order = self.baseline or {}
        return [(name, self.changes[name]) for name in order if name in self.changes]
