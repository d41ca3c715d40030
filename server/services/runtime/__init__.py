"""The model runtime: loaded models and their layer catalog, model inputs and outputs (batched forward
passes), the one hook module, the one result cache, and trained-weights downloads.

``inputs`` and ``outputs`` are imported from their modules (they need ``images``, which needs the cache)."""

from server.services.runtime.architecture_catalog import ArchitectureCatalog
from server.services.runtime.batching import PredictionBatcher
from server.services.runtime.cache import ResultCache
from server.services.runtime.model_runtime import LoadedModel, ModelLayer, ModelRuntime
from server.services.runtime.weights_download import WeightsDownloads

__all__ = ["ArchitectureCatalog", "LoadedModel", "ModelLayer", "ModelRuntime", "PredictionBatcher", "ResultCache", "WeightsDownloads"]
