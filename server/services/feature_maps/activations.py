"""Layer outputs ("feature maps") for one image: captured in one forward pass, cached under a byte budget.

Capture registers forward hooks on the shared, read-only module while holding ``LoadedModel.lock`` and
removes them in ``finally``, so no hook outlives the call, even when the forward raises. A hook only
records calls made by the capturing thread: other requests may run the same module concurrently without
the lock (predictions, for instance) and their outputs must not leak into ours.

Every named module whose output is a tensor can be picked: convolutions, norms, activations, pools,
whole blocks (residual block outputs), linear layers. A module called more than once per forward pass
(torchvision's ResNet blocks reuse one ReLU) reports its *last* call, which is also what the
architecture table lists as its output shape. Outputs are copied at hook time because later in-place
operations (``ReLU(inplace=True)``, ``out += identity``) would otherwise overwrite them — only those:
see ``_VERDICTS`` below.

The cache holds float32 arrays exactly as PyTorch computed them (no float16: served values must equal
PyTorch's), one entry per (model, weights variant, image, layer), evicted least-recently-used by bytes.
A capture keeps the requested layer and the layers nearest to it, up to half the budget, so one large
model cannot flush everything else; a later miss simply recomputes the forward pass.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable, Collection, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from server.errors import ApiError
from server.services.runtime.cache import ResultCache
from server.services.runtime.hooks import forward_hooks
from server.services.runtime.model_runtime import LoadedModel

OutputReducer = Callable[[str, np.ndarray], Any]


def _first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    return None


@dataclass(frozen=True)
class Capture:
    """What one forward pass recorded: kept outputs (float32, batch dimension dropped) and reductions."""

    outputs: dict[str, np.ndarray]
    reduced: dict[str, Any]
    calls: dict[str, int]
    logits: torch.Tensor | None = None  # the model's output, float32 on the CPU (1×N), when a tensor


# Copying every output costs as much as a good part of the forward pass itself (VGG-16: 110 MB), yet
# only outputs that a later in-place operation overwrites need a copy. Which those are is learned per
# module from passes that copy and then compare tensor version counters; an output is shared (no copy)
# only once a pass has seen it survive untouched. Should a shared output change after all, the pass is
# run again with it copied, so served values never depend on the guess.
_VERDICTS: weakref.WeakKeyDictionary[nn.Module, dict[str, bool]] = weakref.WeakKeyDictionary()
_VERDICTS_LOCK = threading.Lock()


def _verdicts(module: nn.Module) -> dict[str, bool]:
    with _VERDICTS_LOCK:
        return dict(_VERDICTS.get(module, {}))


def _learn(module: nn.Module, verdicts: dict[str, bool]) -> None:
    with _VERDICTS_LOCK:
        _VERDICTS.setdefault(module, {}).update(verdicts)


def capture_layers(
    loaded: LoadedModel,
    batch: torch.Tensor,
    keep: Collection[str] | None = None,
    reduce: OutputReducer | None = None,
) -> Capture:
    """Run ``loaded.module`` on ``batch`` (1×C×H×W) once and record layer outputs.

    ``keep``: names whose outputs are returned as arrays (``None`` = every layer). ``reduce``: called
    with (name, output array) for every layer, its result kept instead of the array, so summaries of
    all layers cost no more memory than their results. Unknown names in ``keep`` are ignored.
    """
    if batch.dim() < 1 or batch.shape[0] != 1:
        raise ValueError("capture_layers expects a batch of exactly one image")
    captured, learned, surprised = _capture_once(loaded, batch, keep, reduce, _verdicts(loaded.module))
    _learn(loaded.module, learned)
    if surprised:  # a shared output was overwritten later in the pass: run again, copying it this time
        captured, learned, _ = _capture_once(loaded, batch, keep, reduce, _verdicts(loaded.module))
        _learn(loaded.module, learned)
    return captured


def _capture_once(
    loaded: LoadedModel,
    batch: torch.Tensor,
    keep: Collection[str] | None,
    reduce: OutputReducer | None,
    shareable: dict[str, bool],
) -> tuple[Capture, dict[str, bool], bool]:
    outputs: dict[str, np.ndarray] = {}
    reduced: dict[str, Any] = {}
    calls: dict[str, int] = {}
    watched: dict[str, tuple[torch.Tensor, int, bool]] = {}  # name → (output, its version, shared)
    wanted = None if keep is None else set(keep)

    def make_hook(name: str) -> Callable[[nn.Module, Any, Any], None]:
        record = wanted is None or name in wanted
        share = shareable.get(name, False)

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            tensor = _first_tensor(output)
            if tensor is None or tensor.dim() not in (2, 4):
                return
            calls[name] = calls.get(name, 0) + 1
            if not record and reduce is None:
                return
            # detached, float32, on the CPU; a copy unless this output is known to stay untouched
            array = tensor[0].detach().to("cpu", torch.float32, copy=not share).numpy()
            watched[name] = (tensor, tensor._version, share)
            if record:
                outputs[name] = array
            if reduce is not None:
                reduced[name] = reduce(name, array)

        return hook

    hooks = [(sub, make_hook(name)) for name, sub in loaded.module.named_modules() if name]
    with forward_hooks(loaded, hooks), torch.no_grad():
        output = loaded.module(batch)
    learned: dict[str, bool] = {}
    surprised = False
    for name, (tensor, version, shared) in watched.items():
        untouched = tensor._version == version
        learned[name] = untouched
        surprised = surprised or (shared and not untouched)
    logits = output.detach().float().cpu() if isinstance(output, torch.Tensor) else None
    return Capture(outputs, reduced, calls, logits), learned, surprised


def selectable_layers(layers: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The architecture table's layers whose output is a feature map (C×H×W) or a vector (F)."""
    return [layer for layer in layers if layer.get("output_shape") and len(layer["output_shape"]) in (1, 3)]


def _nbytes(shape: Sequence[int]) -> int:
    return 4 * math.prod(int(s) for s in shape)


class ActivationStore:
    """Per-layer outputs for (model, variant, image) in a :class:`ResultCache` (LRU by bytes); one capture
    per image at a time, shared by every request that needs it."""

    def __init__(self, budget_bytes: int) -> None:
        self.cache: ResultCache[np.ndarray] = ResultCache("activations", budget_bytes)
        self.budget_bytes = self.cache.budget_bytes

    @property
    def captures(self) -> int:
        """Forward passes run, for tests and benchmarks."""
        return self.cache.stats.computations

    @property
    def nbytes(self) -> int:
        return self.cache.nbytes

    def __len__(self) -> int:
        return len(self.cache)

    def plan(self, layers: Sequence[dict[str, Any]], name: str) -> list[str]:
        """Layers to keep from a capture for ``name``: it, then its nearest neighbours, within half the
        budget; ordered farthest first so that the LRU keeps the requested layer longest."""
        order = [layer["name"] for layer in layers]
        sizes = {layer["name"]: _nbytes(layer["output_shape"]) for layer in layers}
        if name not in sizes:
            return [name]
        at = order.index(name)
        by_distance = sorted(range(len(order)), key=lambda i: (abs(i - at), i))
        allowance = self.budget_bytes // 2
        chosen: list[str] = []
        used = 0
        for i in by_distance:
            size = sizes[order[i]]
            if chosen and used + size > allowance:
                continue
            chosen.append(order[i])
            used += size
        return chosen[::-1]

    def get(
        self,
        loaded: LoadedModel,
        image_id: str,
        layer: str,
        layers: Sequence[dict[str, Any]],
        batch_fn: Callable[[], torch.Tensor],
        admit: Callable[[], Any] | None = None,
        reduce: OutputReducer | None = None,
        on_captured: Callable[[Capture], None] | None = None,
    ) -> np.ndarray:
        """The output of ``layer`` for ``image_id`` (float32, C×H×W or F), computing it on a miss.

        ``layers``: the selectable layers (architecture table rows); ``batch_fn``: the model input;
        ``admit``: a context-manager factory (admission control) held around the forward pass.
        ``reduce`` / ``on_captured``: on a miss, also summarise every layer in the same forward pass and
        hand the capture over (the layer overview adopts the summaries, the logits cache the output).
        """
        selectable = {entry["name"] for entry in layers}
        if layer not in selectable:  # (a name that is no module at all was answered 404 by server.deps.LayerDep)
            raise ApiError(
                422, "layer_has_no_feature_map",
                f"Layer {layer!r} of {loaded.entry.id} does not output a feature map or vector.",
            )
        image_key = (loaded.entry.id, loaded.variant, image_id)
        key = (*image_key, layer)

        ran: list[bool] = []

        def compute() -> Capture:
            ran.append(True)
            keep = self.plan(layers, layer)
            batch = batch_fn()
            with admit() if admit is not None else nullcontext():
                captured = capture_layers(loaded, batch, keep, reduce)
            if on_captured is not None:
                on_captured(captured)
            for name in keep:
                if name in captured.outputs:
                    self.cache.put((*image_key, name), captured.outputs[name])
            return captured

        for _ in range(3):  # a capture already running for another layer may not keep ours: then run ours
            hit = self.cache.get(key)
            if hit is not None:
                return hit
            captured = self.cache.get_or_compute((*image_key, "capture"), compute, keep=False)
            if layer in captured.outputs:
                return captured.outputs[layer]
            if ran:
                break  # our own pass did not run the layer
        raise ApiError(
            422, "layer_not_run",
            f"Layer {layer!r} of {loaded.entry.id} did not run in the forward pass, so it has no output.",
        )


def channel_stats(array: np.ndarray) -> dict[str, list[float]]:
    """Per-channel mean, max, min and fraction of positive values (a vector counts as 1×1 channels)."""
    flat = array.reshape(array.shape[0], -1).astype(np.float64)
    return {
        "mean": flat.mean(axis=1).astype(np.float32).tolist(),
        "max": flat.max(axis=1).astype(np.float32).tolist(),
        "min": flat.min(axis=1).astype(np.float32).tolist(),
        "positive_fraction": (flat > 0).mean(axis=1).astype(np.float32).tolist(),
    }
