"""How far each layer's output moved: hooks that record a pass's layer outputs, then compare another pass's
outputs with them (relative L2), layer by layer, without keeping the second pass's outputs.

Recording needs a copy of an output only when a later operation changes it in place (``ReLU(inplace=True)``
after a batch norm): every other output is kept as the tensor the layer returned. Which outputs a model
changes in place is learned from a pass that copies everything (the tensor's version counter says whether
it was written after the layer returned it); a pass that trusted that knowledge checks it the same way, so
a wrong guess is seen (:meth:`LayerChanges.trustworthy`) and the caller records again with copies.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

import torch
from torch import nn

Hook = Callable[[nn.Module, Any, Any], Any]


def relative_l2(new: torch.Tensor, old: torch.Tensor) -> float:
    """‖new − old‖₂ / ‖old‖₂ (the denominator at least 1e-12); float32 tensors, the norms' ratio in float64."""
    return float(torch.dist(new.detach(), old.detach())) / max(float(torch.linalg.vector_norm(old.detach())), 1e-12)


def watched_layers(model: nn.Module, names: Sequence[str]) -> list[tuple[str, nn.Module]]:
    """(name, module) of the named layers ``model`` has, in the order given."""
    modules = dict(model.named_modules())
    return [(name, modules[name]) for name in names if name in modules]


class LayerChanges:
    """Forward hooks on the named layers of ``model``. Without a ``baseline`` they record each layer's output;
    with one they compute each layer's relative L2 change against it. With ``after`` (a layer name), only
    layers that run after that layer's first call count. A layer run twice reports its last call.

    ``copy``: the layers whose recorded output must be a copy taken as it leaves the layer (None: all of
    them); the others are kept as returned. ``watched``: the (name, module) pairs, when the caller has them."""

    def __init__(self, model: nn.Module, names: Sequence[str], baseline: dict[str, torch.Tensor] | None = None,
                 after: str | None = None, norms: dict[str, float] | None = None,
                 copy: Collection[str] | None = None, watched: list[tuple[str, nn.Module]] | None = None) -> None:
        self.watched = watched if watched is not None else watched_layers(model, names)
        self.baseline = baseline
        self.norms = norms if norms is not None else {}  # ‖baseline output‖₂ per layer, filled on first use
        self.gate = dict(model.named_modules())[after] if after is not None else None
        self.after = after is None
        self.copy = copy
        self.outputs: dict[str, torch.Tensor] = {}
        self.changes: dict[str, float] = {}
        self._versions: dict[str, tuple[torch.Tensor, int]] = {}  # the returned output and its version then

    def _seen_gate(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self.after = True

    def _hook(self, name: str) -> Hook:
        copied = self.copy is None or name in self.copy

        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if not self.after or not isinstance(output, torch.Tensor):
                return
            if self.baseline is None:
                kept = output.detach()
                self._versions[name] = (kept, kept._version)
                self.outputs.pop(name, None)
                self.outputs[name] = kept.clone() if copied else kept
            elif name in self.baseline and self.baseline[name].shape == output.shape:
                old = self.baseline[name]
                if name not in self.norms:
                    self.norms[name] = float(torch.linalg.vector_norm(old))
                self.changes[name] = float(torch.dist(output.detach(), old)) / max(self.norms[name], 1e-12)

        return hook

    def hooks(self, first: Sequence[tuple[nn.Module, Hook]] = ()) -> list[tuple[nn.Module, Hook]]:
        """The hooks to register (``first`` before them: an editing hook runs before the gate sees its output)."""
        gate = [(self.gate, self._seen_gate)] if self.gate is not None else []
        return [*first, *gate, *((m, self._hook(n)) for n, m in self.watched)]

    def changed_in_place(self) -> set[str]:
        """After a recording pass: the layers whose output a later operation of the pass wrote to."""
        return {name for name, (kept, version) in self._versions.items() if kept._version != version}

    def trustworthy(self) -> bool:
        """After a recording pass: every output kept without a copy still holds what the layer returned."""
        copy = self.copy
        return copy is None or not (self.changed_in_place() - set(copy))

    def ordered_changes(self) -> list[tuple[str, float]]:
        """(layer, relative L2) in the order the baseline pass ran them."""
        order = self.baseline or {}
        return [(name, self.changes[name]) for name in order if name in self.changes]
