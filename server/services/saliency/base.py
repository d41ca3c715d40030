"""The saliency pipeline every method shares, in the manner of a template method.

A method's ``explain`` runs the same steps — forward pass, choose the target classes, differentiate the
class scores, let the method weigh what it got, reduce to a signed raw map, scale for display — and each
method overrides one step. The CAM family overrides the *weighting* (:meth:`BaseCAM.channel_weights`
or :meth:`BaseCAM.cam`); the gradient family overrides the *input attribution*
(:meth:`InputAttributionMethod.input_attributions`).

Several target classes cost one pass wherever the method allows it: the forward pass runs once, and the
class-score gradients for T classes come from one batched backward (``is_grads_batched``).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from server.errors import ApiError
from server.services.runtime.architecture_catalog import LayerGeometry
from server.services.runtime.hooks import LayerGraph, capture_layer
from server.services.runtime.model_runtime import LoadedModel
from server.services.saliency.layer_choice import saliency_layer
from server.services.saliency.scaling import Scaled, magnitude_percentile, min_max, upsample

Progress = Callable[[int, int], None]  # (done, total)
STEP_SECONDS = 0.25  # a long run reports progress (and checks for cancellation) about this often


def batches(total: int, max_batch: int, target_s: float = STEP_SECONDS) -> Iterator[tuple[int, int]]:
    """(start, stop) chunks of ``range(total)``, each at most ``max_batch`` long and sized from the time the
    previous chunk took to last about ``target_s``: progress reports, which are also the cancellation
    checkpoints, come that often whatever the model and machine, so abandoned work stops within about
    ``target_s`` (a fixed 32 ResNet-50 passes take seconds on a CPU). Chunking never changes the result."""
    start, size = 0, min(2, max_batch)
    while start < total:
        stop = min(total, start + size)
        began = time.perf_counter()
        yield start, stop
        per_item = (time.perf_counter() - began) / (stop - start)
        size = max(1, min(max_batch, int(target_s / per_item) if per_item > 0 else max_batch))
        start = stop


@dataclass(frozen=True)
class TopK:
    """Target the ``k`` highest-scoring classes (decided after the forward pass), then ``extra`` ones."""

    k: int
    extra: tuple[int, ...] = ()


Targets = Sequence[int] | TopK


@dataclass
class Explanation:
    """What one method said about one image, for T target classes.

    ``attributions``: the method's native result per target (CAM: T×h×w signed; gradient methods:
    T×C×H×W); ``raw``: the signed 2-D map per target (T×h×w, CAM at layer resolution, gradient methods
    summed over input channels); ``maps``: the display maps, T of them, H×W in [0, 1] at input resolution.
    """

    method: str
    layer: str | None
    logits: torch.Tensor  # num_classes, float32 on the CPU
    targets: list[int]
    attributions: torch.Tensor
    raw: torch.Tensor
    maps: list[Scaled]


def resolve_targets(logits: torch.Tensor, targets: Targets) -> list[int]:
    """Class indices to explain; ``logits`` is 1×num_classes."""
    num_classes = int(logits.shape[-1])
    if isinstance(targets, TopK):
        k = max(1, min(targets.k, num_classes))
        top = [int(i) for i in torch.topk(logits[0].detach(), k).indices]
        return top + [int(t) for t in dict.fromkeys(targets.extra) if int(t) not in top and 0 <= int(t) < num_classes]
    chosen = [int(t) for t in targets]
    if not chosen:
        raise ApiError(422, "invalid_target", "At least one target class is needed.")
    for t in chosen:
        if not 0 <= t < num_classes:
            raise ApiError(404, "invalid_target", f"target must be a class index from 0 to {num_classes - 1}; got {t}.")
    return chosen


def class_gradients(logits: torch.Tensor, wrt: torch.Tensor, targets: list[int], row: int = 0,
                    keep_graph: bool = False) -> torch.Tensor:
    """∂logit[row, t]/∂wrt[row] for each target t, as T×(wrt.shape[1:]).

    Several targets share one batched backward pass: the one-hot output gradients are stacked and
    ``torch.autograd.grad(..., is_grads_batched=True)`` vectorises the backward over them. ``keep_graph``:
    the graph is shared (a kept forward pass, see :class:`server.services.runtime.hooks.LayerGraph`) and must
    survive this backward.
    """
    if len(targets) == 1:
        (grad,) = torch.autograd.grad(logits[row, targets[0]], wrt, retain_graph=keep_graph)
        return grad[row : row + 1]
    one_hot = torch.zeros((len(targets), *logits.shape), dtype=logits.dtype, device=logits.device)
    one_hot[torch.arange(len(targets)), row, torch.tensor(targets)] = 1.0
    (grads,) = torch.autograd.grad(logits, wrt, one_hot, is_grads_batched=True, retain_graph=keep_graph)
    return grads[:, row]


def check_logits(logits: object, model_id: str) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != 1:
        raise ApiError(422, "unsupported_model_output", f"{model_id}'s output is not one row of class scores.")
    return logits


class SaliencyMethod(ABC):
    """One saliency method; subclasses set the class attributes and override one step."""

    name: ClassVar[str]
    title: ClassVar[str]
    family: ClassVar[str]  # "cam" | "gradient"
    uses_layer: ClassVar[bool]
    display: ClassVar[str]  # "positive": ReLU then min–max; "magnitude": |raw| over a high percentile
    cost: ClassVar[str] = "one forward and one backward pass"
    # True when more target classes cost little more than one (shared forward passes, a backward that
    # stops at the layer): then the first request for an image computes the top classes' maps with it.
    shares_targets: ClassVar[bool] = True
    # A prior for the scheduler until it has measured the method on a model: many passes per map.
    heavy: ClassVar[bool] = False
    summary: ClassVar[str] = ""

    @abstractmethod
    def attribute(
        self, loaded: LoadedModel, batch: torch.Tensor, layer: str | None, targets: Targets, progress: Progress | None,
        kept: LayerGraph | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """(logits 1×N, attributions T×…, targets): the method's own step(s). ``kept``: a forward pass of
        ``batch`` already run with its graph kept from ``layer`` (layer methods may use it instead of
        running their own)."""

    @abstractmethod
    def to_raw(self, attributions: torch.Tensor) -> torch.Tensor:
        """The signed 2-D map per target, T×h×w."""

    def explain(
        self,
        loaded: LoadedModel,
        batch: torch.Tensor,
        layer: str | None = None,
        targets: Targets = TopK(1),
        progress: Progress | None = None,
        kept: LayerGraph | None = None,
    ) -> Explanation:
        """Run the whole pipeline for ``batch`` (1×C×H×W on the model's device)."""
        logits, attributions, chosen = self.attribute(loaded, batch, layer, targets, progress, kept)
        raw = self.to_raw(attributions).detach().float().cpu()
        maps = self.scale(raw, (int(batch.shape[-2]), int(batch.shape[-1])), self.geometry(loaded, layer))
        return Explanation(
            method=self.name,
            layer=layer if self.uses_layer else None,
            logits=logits.detach().float().cpu()[0],
            targets=chosen,
            attributions=attributions.detach().float().cpu(),
            raw=raw,
            maps=maps,
        )

    def geometry(self, loaded: LoadedModel, layer: str | None) -> LayerGeometry | None:
        """Where the raw map's units sit on the input (None: the raw map is at input resolution)."""
        return None

    def scale(self, raw: torch.Tensor, size: tuple[int, int], geometry: LayerGeometry | None = None) -> list[Scaled]:
        """Explicit display steps: ReLU → upsample → min–max, or |·| → upsample → percentile."""
        if self.display == "positive":
            return min_max(upsample(raw.clamp(min=0), size, geometry))
        return magnitude_percentile(upsample(raw, size, geometry))


@dataclass
class CamContext:
    """What a CAM weighting step may use (activation K×h×w, gradients T×K×h×w or None)."""

    loaded: LoadedModel
    batch: torch.Tensor
    activation: torch.Tensor
    gradients: torch.Tensor | None
    targets: list[int]
    progress: Progress | None


class BaseCAM(SaliencyMethod):
    """Class activation maps: L = Σ_k w_k A^k over a conv layer's channels; methods choose w."""

    family = "cam"
    uses_layer = True
    display = "positive"
    uses_gradients: ClassVar[bool] = True

    def attribute(
        self, loaded: LoadedModel, batch: torch.Tensor, layer: str | None, targets: Targets, progress: Progress | None,
        kept: LayerGraph | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        resolved = saliency_layer(loaded, layer)  # 404 unknown_layer
        layer_name, module = resolved.name, resolved.module
        if kept is not None and kept.layer == layer_name:
            # the image's forward pass was kept from this layer on: no forward of our own
            all_logits, activation, row = kept.logits, kept.activation, kept.row
            logits = all_logits[row : row + 1]
        else:
            # Grad mode is needed only from the captured layer on; the parameters are frozen.
            with torch.enable_grad(), capture_layer(loaded, module) as captured:
                logits = check_logits(loaded.module(batch), loaded.entry.id)
            activation = spatial_activation(captured.activation, captured.shapes, layer_name, self.title)
            all_logits, row = logits, 0
        chosen = resolve_targets(logits, targets)
        gradients = None
        if self.uses_gradients:
            with torch.enable_grad():
                gradients = class_gradients(all_logits, activation, chosen, row, keep_graph=kept is not None)
        logits = logits.detach()
        ctx = CamContext(loaded, batch, activation.detach()[row], gradients, chosen, progress)
        return logits, self.cam(ctx), chosen

    def geometry(self, loaded: LoadedModel, layer: str | None) -> LayerGeometry | None:
        return loaded.geometry(saliency_layer(loaded, layer).name)

    def cam(self, ctx: CamContext) -> torch.Tensor:
        """T×h×w signed map: Σ_k w_k A^k with the method's weights (per channel or per position)."""
        weights = self.channel_weights(ctx)
        return (weights * ctx.activation.unsqueeze(0)).sum(dim=1)

    def channel_weights(self, ctx: CamContext) -> torch.Tensor:
        """T×K×1×1 (per channel) or T×K×h×w (per position) weights."""
        raise NotImplementedError

    def to_raw(self, attributions: torch.Tensor) -> torch.Tensor:
        return attributions


def spatial_activation(
    activation: torch.Tensor | None, shapes: list[tuple[int, ...]], layer: str, method: str
) -> torch.Tensor:
    """The captured 1×K×h×w activation, or a 422 saying why this layer cannot be used."""
    if activation is None or not shapes:
        raise ApiError(
            422, "layer_not_used", f"Layer {layer!r} does not run in the forward pass, so it has no output to explain."
        )
    if activation.dim() != 4 or activation.shape[0] != 1:
        shape = list(shapes[-1][1:]) if shapes[-1] else "not a tensor"
        raise ApiError(
            422,
            "layer_not_spatial",
            f"{method} needs a convolutional layer whose output is channels × height × width; "
            f"{layer!r} gives {shape}. Pick a conv, activation or pooling layer before the classifier.",
        )
    return activation


class InputAttributionMethod(SaliencyMethod):
    """Gradient-family methods: a C×H×W attribution over the input pixels for each target."""

    family = "gradient"
    uses_layer = False
    display = "magnitude"
    shares_targets = False  # each class is one more backward pass through the whole network

    def attribute(
        self, loaded: LoadedModel, batch: torch.Tensor, layer: str | None, targets: Targets, progress: Progress | None,
        kept: LayerGraph | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        with torch.inference_mode():
            logits = check_logits(loaded.module(batch), loaded.entry.id).clone()
        chosen = resolve_targets(logits, targets)
        attributions = self.input_attributions(loaded, batch, layer, chosen, progress)
        return logits, attributions, chosen

    @abstractmethod
    def input_attributions(
        self, loaded: LoadedModel, batch: torch.Tensor, layer: str | None, targets: list[int], progress: Progress | None
    ) -> torch.Tensor:
        """T×C×H×W attributions for the target classes."""

    def to_raw(self, attributions: torch.Tensor) -> torch.Tensor:
        # Summing over input channels keeps the sign (evidence for vs against), as Captum's viewer does.
        return attributions.sum(dim=1)
