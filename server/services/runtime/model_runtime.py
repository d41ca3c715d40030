"""Loaded models: built once, kept in a small LRU, shared read-only by every request.

A request names a model and a weights variant (``auto``, ``trained`` or ``untrained``, or for a training run
one of its checkpoints, ``epoch-<n>`` / ``step-<n>``). ``auto`` means the trained weights when they are here
(bundled, in the hub cache, a run's latest checkpoint) and the seeded untrained ones otherwise; every answer
says which was used, so nothing untrained is ever shown as trained.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field

import torch
from PIL import Image
from torch import nn

from models.preprocessing import Preprocess
from models.registry import ModelEntry, ModelRegistry, WeightsError, WeightsStatus, default_registry
from server.errors import ApiError
from server.services.runtime.architecture_catalog import ArchitectureCatalog, LayerGeometry
from server.services.runtime.cache import ResultCache
from server.services.runtime.hooks import channels_last_max_pools

WEIGHT_CHOICES = ("auto", "trained", "untrained")
CHECKPOINT_NAME = re.compile(r"(epoch|step)-[0-9]{1,7}")
# The weights query as the schema states it: a choice above or a checkpoint's name
WEIGHTS_PATTERN = r"^(auto|trained|untrained|(epoch|step)-[0-9]{1,7})$"


@dataclass
class LoadedModel:
    entry: ModelEntry
    variant: str  # "trained" | "untrained"
    module: nn.Module
    device: torch.device
    preprocess_fn: Preprocess
    # Held while hooks are registered on ``module``: other requests run the same module concurrently.
    lock: threading.Lock = field(default_factory=threading.Lock)
    catalog: ArchitectureCatalog | None = None  # the runtime's: architecture tables and receptive fields

    @property
    def nbytes(self) -> int:
        """Bytes of parameters and buffers (what keeping the model loaded costs)."""
        tensors = [*self.module.parameters(), *self.module.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def geometry(self, layer: str | None) -> LayerGeometry | None:
        """Where ``layer``'s units sit on the input (traced once per model by the architecture catalog)."""
        if self.catalog is None:
            self.catalog = ArchitectureCatalog()
        return self.catalog.geometry(self.entry, layer)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """The float32 C×H×W tensor (on the CPU) the model sees for ``image``."""
        return self.preprocess_fn(image)

    def named_layer(self, name: str) -> ModelLayer:
        """``name`` resolved once (404 ``unknown_layer``): the dependency ``LayerDep`` hands this to services."""
        return ModelLayer(name, self.layer(name))

    def class_index(self, index: int | None, name: str = "target") -> int | None:
        """A class index checked against the model's classes (404 ``invalid_target``, like an unknown layer);
        None (the top-1 class) passes. The one check: ``server.deps`` calls it for each request's class."""
        if index is not None and not 0 <= index < self.entry.num_classes:
            raise ApiError(404, "invalid_target",
                           f"{name} must be a class index from 0 to {self.entry.num_classes - 1}; got {index}.")
        return index

    def layer(self, name: str) -> nn.Module:
        modules = self.__dict__.get("_modules_by_name")
        if modules is None:  # the module tree of a loaded model never changes: index it once
            modules = self.__dict__["_modules_by_name"] = dict(self.module.named_modules())
        if not name or name not in modules:
            raise ApiError(
                404, "unknown_layer", f"Model {self.entry.id} has no layer named {name!r}; see /api/models/{self.entry.id}."
            )
        return modules[name]


@dataclass(frozen=True)
class ModelLayer:
    """A layer of a loaded model, resolved from its name once (at the HTTP edge, by ``server.deps``)."""

    name: str
    module: nn.Module


class ModelRuntime:
    def __init__(self, device: torch.device, max_loaded: int = 4, catalog: ArchitectureCatalog | None = None,
                 budget_bytes: int = 4 * 1024 * 1024 * 1024, registry: ModelRegistry | None = None) -> None:
        self.device = device
        self.registry = registry if registry is not None else default_registry()
        self.max_loaded = max(1, max_loaded)
        self.catalog = catalog if catalog is not None else ArchitectureCatalog()
        # (model id, variant) → LoadedModel; one build per key even when a class asks at once
        self.cache: ResultCache[LoadedModel] = ResultCache("models", budget_bytes, max_items=self.max_loaded)
        self._failures: dict[str, str] = {}  # model id → why its trained weights could not be loaded
        self.last_used: dict[str, float] = {}  # uploaded models only: when a request last named them (monotonic)
        self._lock = threading.Lock()

    # --- registry views -------------------------------------------------------------------------
    def entries(self) -> list[ModelEntry]:
        return self.registry.list()

    def entry(self, model_id: str) -> ModelEntry:
        try:
            entry = self.registry.get(model_id)
        except KeyError:
            raise ApiError(404, "unknown_model", f"There is no model {model_id!r}; see /api/models.") from None
        if entry.problem:  # listed so that its reason shows, but there is nothing to run
            raise ApiError(409, "model_unavailable", f"Model {model_id} is unavailable: {entry.problem}")
        if entry.family == "upload":  # dropped after an idle time (server.services.model_uploads)
            self.last_used[model_id] = time.monotonic()
        return entry

    def weights_status(self, entry: ModelEntry) -> WeightsStatus:
        failure = self._failures.get(entry.id)
        if failure is not None:
            return WeightsStatus("unavailable", failure)
        return entry.weights.status()

    def forget_failure(self, model_id: str) -> None:
        """Called after a successful download: the model's weights may load now."""
        with self._lock:
            self._failures.pop(model_id, None)
        self.cache.discard_where(lambda key: key[0] == model_id)

    def resolve_variant(self, entry: ModelEntry, weights: str) -> str:
        checkpoints = getattr(entry.weights, "checkpoints", None)  # a training run's weights (named checkpoints)
        if CHECKPOINT_NAME.fullmatch(weights):
            if checkpoints is None or weights not in checkpoints():
                raise ApiError(404, "unknown_weights", f"Model {entry.id} has no checkpoint {weights!r}"
                               + (f"; it has {', '.join(checkpoints()) or 'none yet'}." if checkpoints else "."))
            return weights
        if weights not in WEIGHT_CHOICES:
            raise ApiError(422, "invalid_weights", f"weights must be one of {', '.join(WEIGHT_CHOICES)}, or a "
                           "training run's checkpoint (epoch-<n>, step-<n>).")
        if weights == "untrained":
            return "untrained"
        if checkpoints is not None:  # a run's trained weights are its latest checkpoint, by name
            names = checkpoints()
            if names:
                return names[-1]
            if weights == "trained":
                raise ApiError(409, "weights_unavailable", f"{entry.id} has no checkpoint yet.")
            return "untrained"
        status = self.weights_status(entry)
        if status.loadable:
            return "trained"
        if weights == "trained":
            raise ApiError(
                409, "weights_unavailable", f"Trained weights for {entry.id} are not available: {status.detail}"
            )
        return "untrained"

    # --- loading ---------------------------------------------------------------------------------
    def load(self, model_id: str, weights: str = "auto") -> LoadedModel:
        entry = self.entry(model_id)
        variant = self.resolve_variant(entry, weights)
        try:
            return self.cache.get_or_compute((entry.id, variant), lambda: self._build(entry, variant))
        except WeightsError as exc:
            with self._lock:
                self._failures[entry.id] = str(exc)
            if weights == "auto":
                return self.load(model_id, "untrained")
            raise ApiError(409, "weights_unavailable", f"Trained weights for {entry.id} failed to load: {exc}") from exc

    def loaded(self, model_id: str, weights: str = "auto") -> LoadedModel | None:
        """The model when it is loaded already (no waiting, no building), else None."""
        entry = self.entry(model_id)
        return self.cache.get((entry.id, self.resolve_variant(entry, weights)))

    def drop(self, model_id: str) -> None:
        """Forget a model that is going away (an idle upload, a deleted training run): its registry entry and
        its loaded copies."""
        self.registry.unregister(model_id)
        self.last_used.pop(model_id, None)
        self.cache.discard_where(lambda key: key[0] == model_id)
        self.catalog.cache.discard_where(lambda key: key == model_id)

    def load_state(self, entry: ModelEntry) -> str:
        """``loaded``, ``loading`` (being built now: its requests wait) or ``not_loaded`` (built on first use), for
        the weights a request without ``?weights=`` gets."""
        if entry.problem:
            return "not_loaded"
        key = (entry.id, self.resolve_variant(entry, "auto"))
        return "loaded" if key in self.cache else "loading" if self.cache.computing(key) else "not_loaded"

    def loaded_models(self) -> list[LoadedModel]:
        """The models loaded now, the most recently used first (one per model and weights variant)."""
        return self.cache.values()[::-1]

    def _build(self, entry: ModelEntry, variant: str) -> LoadedModel:
        if CHECKPOINT_NAME.fullmatch(variant):
            module = entry.build_untrained()
            module.load_state_dict(entry.weights.load_checkpoint(variant))  # type: ignore[attr-defined]
        else:
            module = entry.build(trained=variant == "trained")
        for param in module.parameters():
            param.requires_grad_(False)
        module = module.to(self.device).eval()
        channels_last_max_pools(module)
        return LoadedModel(entry, variant, module, self.device, entry.make_preprocess(), catalog=self.catalog)
