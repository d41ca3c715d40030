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


@dataclass
class CapturedLayer:
    """The output of one layer, made a leaf of the autograd graph.

    Gradients of the class score with respect to ``activation`` stop there: nothing before the layer
    is differentiated (the parameters are frozen, the input needs no gradient), so no weight gradient
    is ever computed and the backward pass costs only the layers after the target.
    """

    activation: torch.Tensor | None = None
    calls: int = 0
    shapes: list[tuple[int, ...]] = field(default_factory=list)

    def hook(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
        self.calls += 1
        if not isinstance(output, torch.Tensor):
            self.shapes.append(())
            return None
        self.shapes.append(tuple(output.shape))
        leaf = output.detach().requires_grad_(True)
        self.activation = leaf
        # Hand the rest of the network a copy: an in-place op after the layer (ReLU(inplace=True))
        # may then modify it without touching the leaf whose values the CAM weights.
        return leaf.clone()


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
    held_bytes: int  # what the whole batch's graph keeps alive (see graph_nbytes), measured when it was made

    @property
    def nbytes(self) -> int:
        """What keeping this graph keeps alive: the whole pass's graph, since every image of a batch shares it."""
        return self.held_bytes


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


_SAVED: dict[str, tuple[str, ...]] = {}  # autograd node type → its saved-value attributes


def graph_nbytes(logits: torch.Tensor, leaf: torch.Tensor, module: nn.Module) -> int:
    """Bytes an autograd graph keeps alive: every tensor its nodes saved for the backward pass (each storage
    once; the model's own parameters and buffers apart, they live anyway), the leaf and the logits."""
    shared = {t.untyped_storage().data_ptr() for t in (*module.parameters(), *module.buffers())}
    seen: dict[int, int] = {}

    def count(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            storage = value.untyped_storage()
            if storage.data_ptr() not in shared:
                seen[storage.data_ptr()] = storage.nbytes()
        elif isinstance(value, (tuple, list)):
            for item in value:
                count(item)

    count(leaf)
    count(logits)
    stack, visited = [logits.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in visited:
            continue
        visited.add(id(node))
        kind = type(node).__name__
        if kind not in _SAVED:
            _SAVED[kind] = tuple(name for name in dir(node) if name.startswith("_saved_"))
        for name in _SAVED[kind]:
            try:
                count(getattr(node, name))
            except RuntimeError:  # freed already
                pass
        stack.extend(next_node for next_node, _ in node.next_functions)
    return sum(seen.values())
