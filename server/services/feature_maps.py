"""Feature maps of stored images, as the API serves them: one object that ties the per-layer activation
cache, the layer overviews (strip thumbnails and the model-wide range) and the work limiter together, so
that the first forward pass for an image fills both caches and routers only parse and shape answers."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch

from server.services import atlas
from server.services.activations import ActivationStore, selectable_layers
from server.services.architecture import ArchitectureCatalog
from server.services.image_store import ImageStore
from server.services.layer_overview import LayerOverview, LayerOverviews
from server.services.model_inputs import input_batch
from server.services.model_runtime import LoadedModel


class FeatureMaps:
    def __init__(self, activations: ActivationStore, overviews: LayerOverviews, architectures: ArchitectureCatalog,
                 images: ImageStore, admit: Callable[[], AbstractContextManager[Any]] | None = None) -> None:
        self.activations = activations
        self.overviews = overviews
        self.architectures = architectures
        self.images = images
        self.admit = admit  # held around every forward pass (the work limiter)

    def layers(self, loaded: LoadedModel) -> list[dict[str, Any]]:
        """Rows of the architecture table whose output is a feature map or a vector."""
        return selectable_layers(self.architectures.get(loaded.entry)["layers"])

    def _batch(self, loaded: LoadedModel, image_id: str) -> Callable[[], torch.Tensor]:
        return lambda: input_batch(loaded, self.images, image_id)

    def output(self, loaded: LoadedModel, image_id: str, layer: str) -> np.ndarray:
        """The layer's float32 output for the image (C×H×W or F); 404 / 422 ApiErrors for bad layers."""
        layers = self.layers(loaded)
        names = [entry["name"] for entry in layers]
        # the first forward pass for an image also summarises every layer for the strip: no second pass
        summarise = None if self.overviews.has(loaded, image_id) else atlas.summarise_layer
        return self.activations.get(
            loaded, image_id, layer, layers, self._batch(loaded, image_id), self.admit,
            summarise, lambda reduced: self.overviews.adopt(loaded, image_id, names, reduced),
        )

    def overview(self, loaded: LoadedModel, image_id: str) -> LayerOverview:
        """Every layer's range and strongest channels for the image."""
        names = [layer["name"] for layer in self.layers(loaded)]
        return self.overviews.get(loaded, image_id, names, self._batch(loaded, image_id), self.admit)

    def layout(self, loaded: LoadedModel, image_id: str, output: np.ndarray, scale: str, colormap: str,
               columns: int | None = None) -> atlas.AtlasLayout:
        """Atlas geometry and colour ranges; ``scale="global"`` uses the range over all layers."""
        global_range = self.overview(loaded, image_id).global_range if scale == "global" else None
        return atlas.layout(output, scale, colormap, columns, global_range)

