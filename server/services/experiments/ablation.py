"""Switching channels off: a layer's output edited (zero, the channel's mean over the image, or scaled), the
prediction and every later layer's output recomputed from that layer on.

The first ablation of a (model, weights, image, layer) runs the whole pass once and keeps its *head state*
(:mod:`server.services.experiments.layer_split`) and the unedited outputs of the later layers; every
ablation after it costs only the layers after the edited one. Models whose forward cannot be traced get
the same numbers from a whole pass with an editing hook.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from server.services.experiments.layer_changes import LayerChanges
from server.services.experiments.layer_split import LayerSplit, beside_layers, tensor_nbytes
from server.services.runtime.hooks import forward_hooks, recording_hooks
from server.services.runtime.model_runtime import LoadedModel

MODES = ("zero", "mean", "scale")
MAX_FACTOR = 2.0


@dataclass(frozen=True)
class AblationSpec:
    """Which channels of which layer are edited, and how (resolved and checked by the request's dependency)."""

    layer: str
    channels: tuple[int, ...]
    mode: str = "zero"
    factor: float = 0.0  # for mode "scale"
    module: nn.Module | None = field(default=None, compare=False, repr=False)  # ``layer``, resolved once (deps)

    @property
    def edited_module(self) -> nn.Module:
        """The module of ``layer``, as the request's dependency resolved it (``server.deps.get_ablation``)."""
        assert self.module is not None, "an AblationSpec is made with its resolved module"
        return self.module

    def edit(self, output: torch.Tensor) -> torch.Tensor:
        """``output`` (B×C×… ) with the channels edited; a new tensor, ``output`` is left as it was."""
        if not isinstance(output, torch.Tensor) or output.dim() < 2:
            return output
        edited = output.clone()
        index = torch.tensor(self.channels, dtype=torch.long, device=output.device)
        picked = edited.index_select(1, index)
        if self.mode == "zero":
            picked = torch.zeros_like(picked)
        elif self.mode == "mean":
            dims = tuple(range(2, picked.dim()))
            picked = picked.mean(dim=dims, keepdim=True).expand_as(picked) if dims else picked
        else:
            picked = picked * self.factor
        edited.index_copy_(1, index, picked.contiguous())
        return edited


@dataclass
class AblationBase:
    """One unedited pass, kept: the split (None: hook fallback), its head state, the logits (N) and the
    later layers' unedited outputs in the order they ran."""

    split: LayerSplit | None
    state: dict[Any, Any]
    logits: torch.Tensor
    later: dict[str, torch.Tensor] = field(default_factory=dict)
    norms: dict[str, float] = field(default_factory=dict)  # ‖later output‖₂, filled by the first ablation

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.state) + tensor_nbytes(self.later) + self.logits.numel() * 4


@dataclass(frozen=True)
class AblationOutcome:
    logits: torch.Tensor  # N, float32, CPU
    relative_l2: list[tuple[str, float]]  # each later layer: ‖edited − unedited‖₂ / ‖unedited‖₂


def _row(logits: Any) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor):
        raise TypeError("the model's output is not a tensor")
    return logits.detach().float().cpu().reshape(logits.shape[0], -1)[0]


def ablation_base(loaded: LoadedModel, batch: torch.Tensor, layer: str, split: LayerSplit) -> AblationBase:
    """The unedited pass of ``batch`` (1×C×H×W), kept for the ablations of ``layer`` that follow."""
    later = LayerChanges(loaded.module, beside_layers(loaded.module, layer), None, layer)
    with forward_hooks(loaded, later.hooks()), torch.no_grad():
        if split.graph is not None:
            state, logits = split.run_head(batch)
        else:
            state, logits = {}, loaded.module(batch)
    return AblationBase(split if split.graph is not None else None, state, _row(logits), later.outputs)


def ablate(loaded: LoadedModel, batch: torch.Tensor, base: AblationBase, spec: AblationSpec) -> AblationOutcome:
    """The prediction and later layers with ``spec`` applied: from the layer on when the base has a split,
    else a whole pass of ``batch`` with an editing hook."""
    later = LayerChanges(loaded.module, beside_layers(loaded.module, spec.layer), base.later, spec.layer, base.norms)

    def edit_hook(module: nn.Module, inputs: Any, output: Any) -> Any:
        return spec.edit(output)

    with torch.no_grad():
        if base.split is not None:
            # the tail calls the layer's later uses itself (and edits them); only the recorders are hooks
            with forward_hooks(loaded, later.hooks()):
                later.start_after_gate()
                logits = base.split.run_tail(base.state, spec.edit)
        else:
            with forward_hooks(loaded, later.hooks([(spec.edited_module, edit_hook)])):
                logits = loaded.module(batch)
    return AblationOutcome(_row(logits), later.ordered_changes())


class EditedModel(nn.Module):
    """The shared model with one layer's output edited, as a module of its own (for Grad-CAM of an
    ablation). The editing hook is registered for the call only and sees only the calling thread; the
    caller already holds the model's lock (the saliency capture registered its hook under it)."""

    def __init__(self, loaded: LoadedModel, spec: AblationSpec) -> None:
        super().__init__()
        object.__setattr__(self, "_loaded", loaded)  # not a child: the parameters stay the model's
        self.spec = spec

    def forward(self, batch: torch.Tensor) -> Any:
        loaded: LoadedModel = object.__getattribute__(self, "_loaded")
        with recording_hooks(loaded.module, [(self.spec.edited_module, lambda m, i, o: self.spec.edit(o))]):
            return loaded.module(batch)
