"""A forward pass that can restart right after one layer: the cost of an ablation is the layers after it.

The model is traced with ``torch.fx``, treating the layer and every module that does not contain it as a
leaf: only the forwards of the layer's ancestors are traced (the root's, a ResNet stage's, a block's), so
tracing works on most models however unusual the leaves are. The pass is then run node by node: once
unedited (the *head state*: every value computed up to the layer that a later node still uses, copied at
that moment), and afterwards from the layer on, with its output edited, as often as the user likes.

Where tracing fails (data-dependent control flow in an ancestor's ``forward``), :class:`LayerSplit` says
so (``graph is None``) and the caller runs a whole forward pass with an editing hook instead: the same
numbers, the cost of a full pass.

Which later layers are reported: the modules beside the layer's ancestors (the siblings of each ancestor,
after it in the pass), with ``nn.Sequential`` containers opened one level — a ResNet's stages, an
EfficientNet's blocks, LeNet's layers. :func:`depth_layers` gives the same list for the whole model.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

Edit = Callable[[torch.Tensor], torch.Tensor]


class _SplitTracer(fx.Tracer):
    """Traces only the layer's ancestors; the layer and every other module are leaves (called as they are).

    ``torch.fx`` patches ``nn.Module.__call__`` and ``__getattr__`` process-wide while it traces, so every
    model that runs in another thread at that moment would be traced too (and break). Module calls and
    attribute reads from other threads are passed straight through instead."""

    def __init__(self, layer: str) -> None:
        super().__init__()
        self.layer = layer
        self.owner = threading.get_ident()

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if threading.get_ident() != self.owner:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        if threading.get_ident() != self.owner:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        name = module_qualified_name
        if name == self.layer:
            return True
        return not (name == "" or self.layer.startswith(name + "."))


def _ancestors(layer: str) -> list[str]:
    parts = layer.split(".")
    return ["", *(".".join(parts[:i]) for i in range(1, len(parts)))]


def beside_layers(model: nn.Module, layer: str) -> list[str]:
    """The modules beside ``layer``'s ancestors (definition order), Sequentials opened one level."""
    modules = dict(model.named_modules())
    chain = set(_ancestors(layer)) if layer else {""}
    out: list[str] = []
    for ancestor in _ancestors(layer) if layer else [""]:
        for child, module in modules[ancestor].named_children():
            name = f"{ancestor}.{child}" if ancestor else child
            if name in chain or name == layer:
                continue
            if isinstance(module, nn.Sequential) and len(module) > 0:
                out.extend(f"{name}.{grand}" for grand, _ in module.named_children())
            else:
                out.append(name)
    return out


def depth_layers(model: nn.Module) -> list[str]:
    """The model's layers over depth, for charts and comparisons: its top-level children, Sequentials opened."""
    return beside_layers(model, "")


@dataclass
class LayerSplit:
    """``model`` traced for restarts after ``layer``; ``graph`` is None when tracing failed (``reason``)."""

    model: nn.Module
    layer: str
    graph: fx.Graph | None
    reason: str = ""

    @classmethod
    def trace(cls, model: nn.Module, layer: str) -> LayerSplit:
        try:
            graph = _SplitTracer(layer).trace(model)
        except Exception as exc:  # noqa: BLE001 — any tracing failure means: use the hook fallback
            return cls(model, layer, None, f"{type(exc).__name__}: {exc}"[:200])
        nodes = list(graph.nodes)
        calls = [i for i, n in enumerate(nodes) if n.op == "call_module" and n.target == layer]
        if not calls:
            return cls(model, layer, None, "the layer is not called as a module in the traced forward pass")
        return cls(model, layer, graph)

    @property
    def nodes(self) -> list[fx.Node]:
        assert self.graph is not None
        return list(self.graph.nodes)

    def split_index(self) -> int:
        return next(i for i, n in enumerate(self.nodes) if n.op == "call_module" and n.target == self.layer)

    def run_head(self, batch: torch.Tensor) -> tuple[dict[fx.Node, Any], torch.Tensor]:
        """Run the whole pass unedited; returns (the head state: values the tail needs, copied at the split,
        and the logits). The layer's own output is part of the head state."""
        nodes = self.nodes
        at = self.split_index()
        env: dict[fx.Node, Any] = {}
        state: dict[fx.Node, Any] = {}
        result: Any = None
        for i, node in enumerate(nodes):
            result = self._step(node, env, batch, None)
            if i == at:
                state = _copy_live(nodes, at, env)
            if node.op == "output":
                break
        return state, result

    def run_tail(self, state: dict[fx.Node, Any], edit: Edit) -> Any:
        """Run from the layer on: its output (from ``state``) edited by ``edit``, every later call of the
        layer edited too. ``state`` is left untouched (in-place operations in the tail work on copies)."""
        nodes = self.nodes
        at = self.split_index()
        env = _copy_values(state)
        env[nodes[at]] = edit(env[nodes[at]])
        for node in nodes[at + 1 :]:
            out = self._step(node, env, None, edit)
            if node.op == "output":
                return out
        raise RuntimeError("the traced graph has no output")

    def _step(self, node: fx.Node, env: dict[fx.Node, Any], batch: torch.Tensor | None, edit: Edit | None) -> Any:
        def load(value: Any) -> Any:
            return fx.node.map_arg(value, lambda n: env[n])

        if node.op == "placeholder":
            if batch is None:
                raise RuntimeError("the tail reads the input: the split is too early")
            env[node] = batch
        elif node.op == "get_attr":
            target: Any = self.model
            for part in str(node.target).split("."):
                target = getattr(target, part)
            env[node] = target
        elif node.op == "call_function":
            env[node] = node.target(*load(node.args), **load(node.kwargs))  # type: ignore[operator]
        elif node.op == "call_method":
            self_obj, *args = load(node.args)
            env[node] = getattr(self_obj, str(node.target))(*args, **load(node.kwargs))
        elif node.op == "call_module":
            out = self.model.get_submodule(str(node.target))(*load(node.args), **load(node.kwargs))
            if edit is not None and node.target == self.layer:
                out = edit(out)
            env[node] = out
        elif node.op == "output":
            return load(node.args[0])
        return env.get(node)


def _copy_live(nodes: list[fx.Node], at: int, env: dict[fx.Node, Any]) -> dict[fx.Node, Any]:
    """The values computed up to node ``at`` that a node after it uses (and node ``at`` itself), copied."""
    later = set(nodes[at + 1 :])
    live = {n: v for n, v in env.items() if n is nodes[at] or any(u in later for u in n.users)}
    return _copy_values(live)


def _copy_values(values: dict[fx.Node, Any]) -> dict[fx.Node, Any]:
    """Tensors cloned (tensors that shared memory share it in the copy too); other values as they are."""
    clones: dict[tuple[int, tuple[int, ...], tuple[int, ...]], torch.Tensor] = {}
    out: dict[fx.Node, Any] = {}
    for node, value in values.items():
        if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
            key = (value.data_ptr(), tuple(value.shape), tuple(value.stride()))
            if key not in clones:
                clones[key] = value.detach().clone()
            out[node] = clones[key]
        else:
            out[node] = value
    return out


def tensor_nbytes(values: dict[Any, Any]) -> int:
    return sum(v.numel() * v.element_size() for v in values.values() if isinstance(v, torch.Tensor))
