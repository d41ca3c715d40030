"""Every hook ConvScope puts on a model, in one place.

The loaded module is shared by every request, so a hook registered on it would also fire for a forward
pass another thread runs at the same moment (predictions, feature maps). Two guards keep requests apart:
hooks on a shared model are registered only while ``LoadedModel.lock`` is held, and every hook ignores
calls from other threads. Hooks are always removed in ``finally``, also when the forward pass raises.

Users: layer outputs for feature maps (``activations``), step-through captures (``conv_trace``), the
architecture table's output shapes and the receptive-field tracer (private copies: no lock needed, the
same guard), and saliency (a layer's output as an autograd leaf, guided-backprop ReLUs).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

ForwardHook = Callable[[nn.Module, tuple[Any, ...], Any], Any]
ForwardPreHook = Callable[[nn.Module, tuple[Any, ...]], Any]


def _this_thread_only(hook: Callable[..., Any]) -> Callable[..., Any]:
    owner = threading.get_ident()

    def guarded(module: nn.Module, *args: Any) -> Any:
        if threading.get_ident() != owner:
            return None  # another request's forward pass: leave it untouched
        return hook(module, *args)

    return guarded


@contextmanager
def recording_hooks(
    model: nn.Module,
    hooks: Sequence[tuple[nn.Module, ForwardHook]],
    pre_hooks: Sequence[tuple[nn.Module, ForwardPreHook]] = (),
    lock: Any = None,
) -> Iterator[None]:
    """Forward (and pre-forward) hooks on modules of ``model`` for the duration of the block.

    ``lock``: held from registration to removal (the shared model's lock; None for a private copy).
    Every hook only sees the registering thread's calls; all are removed in ``finally``.
    """
    with lock if lock is not None else nullcontext():
        handles = []
        try:
            for module, pre in pre_hooks:
                handles.append(module.register_forward_pre_hook(_this_thread_only(pre)))
            for module, hook in hooks:
                handles.append(module.register_forward_hook(_this_thread_only(hook)))
            yield
        finally:
            for handle in handles:
                handle.remove()


@contextmanager
def forward_hooks(
    loaded: Any,
    hooks: Sequence[tuple[nn.Module, ForwardHook]],
    pre_hooks: Sequence[tuple[nn.Module, ForwardPreHook]] = (),
) -> Iterator[None]:
    """Hooks on the shared model of ``loaded`` (a LoadedModel), under its lock."""
    with recording_hooks(loaded.module, hooks, pre_hooks, lock=loaded.lock):
        yield


class StopForward(Exception):
    """Raised by a recording hook once everything needed was recorded: the rest of the forward pass is
    skipped. :func:`run_forward` runs a module and catches it (the one early-stop exception)."""


def run_forward(module: nn.Module, batch: torch.Tensor) -> Any:
    """``module(batch)``; None when a hook stopped the pass early with :class:`StopForward`."""
    try:
        return module(batch)
    except StopForward:
        return None


@dataclass
class LayerRecorder:
    """The one capture type: what hooks recorded of layers in one forward pass, by layer name (the last
    call of a module that runs more than once wins, as everywhere in the API).

    ``outputs[name]`` / ``inputs[name]``: the tensors as :meth:`hook` was asked to keep them;
    ``counts[name]``: how many calls gave a tensor; ``shapes[name]``: every call's output shape (``()`` for
    a non-tensor output).
    """

    outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    shapes: dict[str, list[tuple[int, ...]]] = field(default_factory=dict)

    def clear(self) -> None:
        for table in (self.outputs, self.inputs, self.counts, self.shapes):
            table.clear()

    def hook(self, name: str, *, keep: str = "tensor", with_input: bool = False, stop: bool = False,
             dims: tuple[int, ...] | None = None, first_only: bool = False) -> ForwardHook:
        """A forward hook that records ``name``'s output.

        ``keep``: ``"tensor"`` the output as it is (still in the graph), ``"copy"`` row 0 detached as a float32
        CPU copy (safe from later in-place operations), ``"leaf"`` the output made an autograd leaf (the rest
        of the network gets a clone, so gradients of the scores stop at it). ``with_input``: also the first
        input (as ``keep`` says). ``dims``: only tensors of these ranks count. ``first_only``: keep the first
        call. ``stop``: raise :class:`StopForward` once recorded.
        """

        def record(_module: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
            self.shapes.setdefault(name, []).append(tuple(output.shape) if isinstance(output, torch.Tensor) else ())
            if not isinstance(output, torch.Tensor) or (dims is not None and output.dim() not in dims):
                return None
            if first_only and name in self.outputs:
                return None
            if with_input and (not inputs or not isinstance(inputs[0], torch.Tensor)):
                return None  # e.g. DenseNet's dense layers take a list: nothing to record
            self.counts[name] = self.counts.get(name, 0) + 1
            replaced = None
            if keep == "leaf":
                kept = output.detach().requires_grad_(True)
                # an in-place op after the layer (ReLU(inplace=True)) may then change the copy, not the leaf
                replaced = kept.clone()
            elif keep == "copy":
                kept = _row_copy(output)
            else:
                kept = output
            self.outputs[name] = kept
            if with_input:
                self.inputs[name] = _row_copy(inputs[0]) if keep == "copy" else inputs[0]
            if stop:
                raise StopForward
            return replaced

        return record


def _row_copy(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach()[0].to("cpu", torch.float32, copy=True)


class CapturedLayer:
    """One layer's output as an autograd leaf: a view of a :class:`LayerRecorder` of one layer with
    ``keep="leaf"`` (the shape saliency code reads).

    Gradients of the class score with respect to ``activation`` stop there: nothing before the layer
    is differentiated (the parameters are frozen, the input needs no gradient), so no weight gradient
    is ever computed and the backward pass costs only the layers after the target.
    """

    def __init__(self) -> None:
        self.recorder = LayerRecorder()
        self.hook = self.recorder.hook("layer", keep="leaf")

    @property
    def activation(self) -> torch.Tensor | None:
        return self.recorder.outputs.get("layer")

    @property
    def calls(self) -> int:
        return len(self.shapes)

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return self.recorder.shapes.get("layer", [])


@contextmanager
def capture_layer(loaded: Any, layer: nn.Module) -> Iterator[CapturedLayer]:
    """Capture ``layer``'s output (the last call's, when the module runs more than once) as a grad leaf."""
    captured = CapturedLayer()
    with forward_hooks(loaded, [(layer, captured.hook)]):
        yield captured


def _guided_relu_hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
    if isinstance(output, torch.Tensor) and output.requires_grad:
        # Guided backprop: only positive gradients pass back through a ReLU (the ReLU's own derivative
        # then also zeroes positions whose input was negative).
        output.register_hook(lambda grad: grad.clamp(min=0))
    return None


@contextmanager
def guided_relus(loaded: Any) -> Iterator[int]:
    """Guided-backprop hooks on every ``nn.ReLU`` module; yields how many were hooked.

    The model itself is never modified: tensor hooks on the ReLU outputs belong to this request's graph.
    ReLUs applied as functions (``F.relu``) inside a module are not seen and backpropagate as usual.
    """
    relus = [m for m in loaded.module.modules() if isinstance(m, nn.ReLU)]
    with forward_hooks(loaded, [(m, _guided_relu_hook) for m in relus]):
        yield len(relus)


@dataclass(frozen=True)
class LayerGraph:
    """A forward pass kept for later gradients: ``activation`` (B×K×h×w, an autograd leaf) is ``layer``'s
    output and ``logits`` (B×N) were computed from it with the graph kept; row ``row`` is this image.
    Gradients of any class score to the layer then cost only a backward through the layers after it."""

    layer: str
    activation: torch.Tensor
    logits: torch.Tensor
    row: int

    @property
    def nbytes(self) -> int:
        """This image's share of what the graph keeps alive (the layer's output, about twice)."""
        a = self.activation
        return 2 * a.numel() * a.element_size() // max(1, int(a.shape[0]))


def forward_with_layer_graph(loaded: Any, batch: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``loaded.module(batch)`` with ``layer``'s output made a grad leaf: (logits with the graph from that
    leaf, the leaf) — or (detached logits, None) when the layer gives no B×K×h×w tensor. Nothing before
    the layer is differentiated (frozen parameters, an input without gradient)."""
    module = loaded.layer(layer)
    with torch.enable_grad(), capture_layer(loaded, module) as captured:
        logits = loaded.module(batch)
    leaf = captured.activation
    if (not isinstance(logits, torch.Tensor) or leaf is None or leaf.dim() != 4 or captured.calls != 1
            or leaf.shape[0] != batch.shape[0] or not logits.requires_grad):
        return (logits.detach() if isinstance(logits, torch.Tensor) else logits), None
    return logits, leaf
