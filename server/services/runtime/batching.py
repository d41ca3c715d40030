"""Dynamic batching: concurrent forward passes through the same model run as one batch.

A classroom asks for predictions of many images at once; one forward pass over a batch of 16 costs far
less than 16 passes of one, above all on a GPU. The first request for a model becomes the *leader* of
an open batch; requests for the same model that arrive while the batch is open join it as *followers*.
The leader waits a short window (only when other work is running, so an idle server adds no latency),
then for a slot of the :class:`WorkLimiter`; the batch keeps filling while it waits, so the busier the
server, the bigger the batches. Results are sliced back per request: the same numbers as unbatched,
since every model is in eval mode (no batch statistics, no dropout).

Everything stays bounded: a batch holds at most ``max_batch`` requests and each batch needs one limiter
slot, so overload still answers 503 + Retry-After — to the leader and its followers alike.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch

from server.errors import ApiError
from server.services.runtime.hooks import LayerGraph, forward_with_layer_graph, graph_nbytes
from server.services.runtime.model_runtime import LoadedModel
from server.services.work.cancel import current_token
from server.services.work.limiter import WorkLimiter
from server.services.work.scheduler import Scheduler
from server.services.work.timing import phase


@dataclass
class _Batch:
    loaded: LoadedModel
    layer: str | None = None  # keep the graph from this layer's output to the logits (for Grad-CAM later)
    inputs: list[torch.Tensor] = field(default_factory=list)
    full: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    outputs: torch.Tensor | None = None
    graph: tuple[torch.Tensor, torch.Tensor, int] | None = None  # (logits with graph, leaf, bytes held), whole batch
    error: BaseException | None = None
    closed: bool = False  # no more members: computing, or given up


@dataclass
class BatchingStats:
    requests: int = 0
    forwards: int = 0
    largest_batch: int = 0


class PredictionBatcher:
    """Runs ``loaded.module`` on 1×C×H×W inputs, batching concurrent calls for the same module."""

    def __init__(self, limiter: WorkLimiter | Scheduler, window_s: float = 0.002, max_batch: int = 16) -> None:
        self.limiter = limiter  # a pool, or the scheduler (which picks the pool by measured cost)
        self.window_s = max(0.0, window_s)
        self.max_batch = max(1, max_batch)
        self.stats = BatchingStats()
        self._lock = threading.Lock()
        self._open: dict[tuple, _Batch] = {}
        self._pending = 0

    def pending(self) -> int:
        """Requests waiting in batches that have not started computing yet."""
        with self._lock:
            return self._pending

    def outputs(self, loaded: LoadedModel, inputs: torch.Tensor) -> torch.Tensor:
        """The model's output for ``inputs`` (1×C×H×W on the model's device) as a 1×… float tensor on the CPU.

        Raises what the forward pass raised, or ApiError 503 when the limiter refuses the batch.
        """
        return self.forward(loaded, inputs)[0]

    def forward(self, loaded: LoadedModel, inputs: torch.Tensor,
                layer: str | None = None) -> tuple[torch.Tensor, LayerGraph | None]:
        """:meth:`outputs`, and with ``layer`` also the pass's graph from that layer to the logits (this
        image's row of the batch), so a Grad-CAM of the image at that layer needs no forward pass of its own."""
        if inputs.dim() < 1 or inputs.shape[0] != 1:
            raise ValueError(f"expected a batch of one, got shape {tuple(inputs.shape)}")
        # Only inputs that can be stacked share a batch; the module object itself (not just the model id)
        # is the key, so a model reloaded meanwhile never mixes with its predecessor.
        key = (id(loaded.module), tuple(inputs.shape[1:]), inputs.dtype, str(inputs.device), layer)
        with self._lock:
            self.stats.requests += 1
            batch = self._open.get(key)
            leader = batch is None
            if batch is None:
                batch = _Batch(loaded, layer)
                self._open[key] = batch
            slot = len(batch.inputs)
            batch.inputs.append(inputs)
            self._pending += 1
            if len(batch.inputs) >= self.max_batch:
                del self._open[key]  # full: the next request starts a new batch
                batch.full.set()
        if leader:
            self._lead(key, batch)
            return self._result(batch, slot)
        token = current_token()
        with phase("batch"):
            while not batch.done.wait(0.05):  # bounded by the leader's admission; our client may leave earlier
                token.check()
        if batch.error is not None:
            if isinstance(batch.error, ApiError):  # a fresh copy: each request raises its own
                err = batch.error
                raise ApiError(err.status, err.code, err.message, dict(err.headers)) from None
            raise batch.error
        return self._result(batch, slot)

    @staticmethod
    def _result(batch: _Batch, slot: int) -> tuple[torch.Tensor, LayerGraph | None]:
        assert batch.outputs is not None
        graph = None
        if batch.graph is not None and batch.layer is not None:
            graph = LayerGraph(batch.layer, batch.graph[1], batch.graph[0], slot, batch.graph[2])
        return batch.outputs[slot : slot + 1], graph

    def _lead(self, key: tuple, batch: _Batch) -> torch.Tensor:
        try:
            label = f"forward/{batch.loaded.entry.id}"
            scheduler = self.limiter if isinstance(self.limiter, Scheduler) else None
            pool = scheduler.select(label) if scheduler is not None else self.limiter
            if self.window_s and pool.active > 0:
                with phase("batch"):
                    batch.full.wait(self.window_s)  # others are computing: give followers a moment to join
            with scheduler.admit(label) if scheduler is not None else pool.admit():
                self._close(key, batch)  # later requests start the next batch
                stacked = torch.cat(batch.inputs) if len(batch.inputs) > 1 else batch.inputs[0]
                if batch.layer is None:
                    with torch.inference_mode():
                        out = batch.loaded.module(stacked)
                else:
                    out, leaf = forward_with_layer_graph(batch.loaded, stacked, batch.layer)
                    if leaf is not None:
                        batch.graph = (out, leaf, graph_nbytes(out, leaf, batch.loaded.module))
                batch.outputs = out.detach().float().cpu()
            with self._lock:
                self.stats.forwards += 1
                self.stats.largest_batch = max(self.stats.largest_batch, len(batch.inputs))
            return batch.outputs
        except BaseException as exc:
            batch.error = exc
            raise
        finally:
            self._close(key, batch)
            batch.done.set()

    def _close(self, key: tuple, batch: _Batch) -> None:
        with self._lock:
            if self._open.get(key) is batch:
                del self._open[key]
            if not batch.closed:
                batch.closed = True
                self._pending -= len(batch.inputs)
