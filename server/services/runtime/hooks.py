"""Every hook ConvScope puts on a model, in one place.

The loaded module is shared by every request, so a hook registered on it would also fire for a forward
pass another thread runs at the same moment (predictions, feature maps). Two guards keep requests apart:
hooks on a shared model are registered only while ``LoadedModel.lock`` is held, and every hook ignores
calls from other threads. Hooks are always removed in ``finally``, also when the forward pass raises.

Users: layer outputs for feature maps (``activations``), step-through captures (``conv_trace``), the
architecture table's output shapes and the receptive-field tracer (private copies: no lock needed, the
same guard), and saliency (a layer's output as an autograd leaf, guided-backprop ReLUs). The one kind a model
keeps: its max-pools run on a channels-last copy (``channels_last_max_pools``, registered when it is built;
stateless and exact, see there).
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

    ``outputs[name]`` / ``inputs[name]``: the tensors as :meth:`hook` was asked to keep them, in the order
    of the calls kept; ``counts[name]``: how many calls gave a tensor; ``shapes[name]``: every call's output
    shape (``()`` for a non-tensor output); ``changes[name]``: with ``keep="change"``, how far the output
    moved from a baseline (relative L2).
    """

    outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    shapes: dict[str, list[tuple[int, ...]]] = field(default_factory=dict)
    changes: dict[str, float] = field(default_factory=dict)

    def clear(self) -> None:
        for table in (self.outputs, self.inputs, self.counts, self.shapes, self.changes):
            table.clear()

    def seen(self, name: str) -> None:
        """Count ``name`` as called (a pass that starts right after it: hooks waiting for it may record)."""
        self.shapes.setdefault(name, [])

    def hook(self, name: str, *, keep: str = "tensor", with_input: bool = False, stop: bool = False,
             dims: tuple[int, ...] | None = None, first_only: bool = False, after: str | None = None,
             baseline: dict[str, torch.Tensor] | None = None, norms: dict[str, float] | None = None) -> ForwardHook:
        """A forward hook that records ``name``'s output.

        ``keep``: ``"tensor"`` the output as it is (still in the graph), ``"copy"`` row 0 detached as a float32
        CPU copy, ``"clone"`` a detached clone of the whole output on its device (both safe from later in-place
        operations), ``"leaf"`` the output made an autograd leaf (the rest of the network gets a clone, so
        gradients of the scores stop at it), ``"change"`` only ‖output − baseline[name]‖₂ / ‖baseline[name]‖₂
        in ``changes`` (when the shapes match; ``norms`` caches the baseline's norms), ``"none"`` only the
        call (``shapes``). ``with_input``: also the first input (as ``keep`` says). ``dims``: only tensors of
        these ranks count. ``first_only``: keep the first call. ``after``: only calls once the layer ``after``
        was recorded (or :meth:`seen`). ``stop``: raise :class:`StopForward` once recorded.
        """

        def record(_module: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
            if after is not None and after not in self.shapes:
                return None
            self.shapes.setdefault(name, []).append(tuple(output.shape) if isinstance(output, torch.Tensor) else ())
            if not isinstance(output, torch.Tensor) or (dims is not None and output.dim() not in dims):
                return None
            if keep == "none":
                return None
            if keep == "change":
                old = (baseline or {}).get(name)
                if old is not None and old.shape == output.shape:
                    self.changes[name] = _relative_l2(output.detach(), old, name, norms if norms is not None else {})
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
            elif keep == "clone":
                kept = output.detach().clone()
            else:
                kept = output
            self.outputs.pop(name, None)  # a module run again moves to its last call
            self.outputs[name] = kept
            if with_input:
                self.inputs[name] = _row_copy(inputs[0]) if keep == "copy" else inputs[0]
            if stop:
                raise StopForward
            return replaced

        return record


def _row_copy(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach()[0].to("cpu", torch.float32, copy=True)


def _relative_l2(new: torch.Tensor, old: torch.Tensor, name: str, norms: dict[str, float]) -> float:
    """‖new − old‖₂ / ‖old‖₂ (the denominator at least 1e-12), ‖old‖₂ kept in ``norms[name]``."""
    if name not in norms:
        norms[name] = float(torch.linalg.vector_norm(old))
    # ‖new − old‖ as the norm of the difference: torch.dist's general p-norm is slower on CPU
    return float(torch.linalg.vector_norm(new - old)) / max(norms[name], 1e-12)


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


def _pool_in_channels_last(module: nn.Module, args: tuple[Any, ...]) -> Any:
    x = args[0] if args else None
    if (isinstance(x, torch.Tensor) and x.dim() == 4 and x.device.type == "cpu" and not x.requires_grad
            and x.is_contiguous()):
        return (x.contiguous(memory_format=torch.channels_last), *args[1:])
    return None


def _pool_output_contiguous(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
    if isinstance(output, torch.Tensor) and not output.is_contiguous():
        return output.contiguous()
    return None


PERMANENT_HOOKS = (_pool_in_channels_last, _pool_output_contiguous)  # the only hooks a loaded model keeps


def channels_last_max_pools(module: nn.Module) -> int:
    """Run every ``nn.MaxPool2d`` of a loaded model on a channels-last copy of its input (CPU, no gradient
    through it), its output back in the usual layout; the number of pools so hooked.

    PyTorch's CPU max-pool is several times slower on the default (NCHW) layout than on channels-last: ResNet's
    stem pool took 2.4 ms of an 18 ms ResNet-18 forward, 0.6 ms with both conversions (2 threads). A maximum is
    a selection, so the values are exactly the same (tests/test_pool_layout.py checks bit equality). An input
    that needs a gradient keeps its layout: with tied maxima the two kernels may route the gradient to
    different positions, and gradient saliency is checked against plain PyTorch. Permanent hooks, registered
    when the model is built (before any request shares it); stateless, so every thread may run them, and
    later hooks (feature maps of a pool layer) see the usual layout."""
    pools = [m for m in module.modules() if type(m) is nn.MaxPool2d and not m.return_indices]
    for pool in pools:
        pool.register_forward_pre_hook(_pool_in_channels_last)
        pool.register_forward_hook(_pool_output_contiguous)
    return len(pools)


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
