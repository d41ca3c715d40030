"""How far each layer's output moved: hooks that record a pass's layer outputs, then compare another pass's
outputs with them (relative L2), layer by layer, without keeping the second pass's outputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

Hook = Callable[[nn.Module, Any, Any], Any]


def relative_l2(new: torch.Tensor, old: torch.Tensor) -> float:
    """‖new − old‖₂ / ‖old‖₂ (the denominator at least 1e-12); float32 tensors, the norms' ratio in float64."""
    return float(torch.linalg.vector_norm(new.detach() - old.detach())) / max(float(torch.linalg.vector_norm(old.detach())), 1e-12)


class LayerChanges:
    """Forward hooks on the named layers of ``model``. Without a ``baseline`` they record each layer's output
    (a copy taken as it leaves the layer: later in-place operations must not change it); with one they
    compute each layer's relative L2 change against it. With ``after`` (a layer name), only layers that
    run after that layer's first call count. A layer run twice reports its last call."""

    def __init__(self, model: nn.Module, names: Sequence[str], baseline: dict[str, torch.Tensor] | None = None,
                 after: str | None = None, norms: dict[str, float] | None = None) -> None:
        modules = dict(model.named_modules())
        self.watched = [(name, modules[name]) for name in names if name in modules]
        self.baseline = baseline
        self.norms = norms if norms is not None else {}  # ‖baseline output‖₂ per layer, filled on first use
        self.gate = modules[after] if after is not None else None
        self.after = after is None
        self.outputs: dict[str, torch.Tensor] = {}
        self.changes: dict[str, float] = {}

    def _seen_gate(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self.after = True

    def _hook(self, name: str) -> Hook:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if not self.after or not isinstance(output, torch.Tensor):
                return
            if self.baseline is None:
                self.outputs.pop(name, None)
                self.outputs[name] = output.detach().clone()
            elif name in self.baseline and self.baseline[name].shape == output.shape:
                old = self.baseline[name]
                if name not in self.norms:
                    self.norms[name] = float(torch.linalg.vector_norm(old))
                # ‖new − old‖ as the norm of the difference: torch.dist's general p-norm is slower on CPU
                self.changes[name] = float(torch.linalg.vector_norm(output.detach() - old)) / max(self.norms[name], 1e-12)

        return hook

    def hooks(self, first: Sequence[tuple[nn.Module, Hook]] = ()) -> list[tuple[nn.Module, Hook]]:
        """The hooks to register (``first`` before them: an editing hook runs before the gate sees its output)."""
        gate = [(self.gate, self._seen_gate)] if self.gate is not None else []
        return [*first, *gate, *((m, self._hook(n)) for n, m in self.watched)]

    def ordered_changes(self) -> list[tuple[str, float]]:
        """(layer, relative L2) in the order the baseline pass ran them."""
        order = self.baseline or {}
        return [(name, self.changes[name]) for name in order if name in self.changes]
