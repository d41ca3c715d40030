"""Feature maps of stored images, as the API serves them: one object that ties the per-layer activation
cache, the layer overviews (strip thumbnails and the model-wide range) and the work limiter together, so
that the first forward pass for an image fills both caches and routers only parse and shape answers."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch

from server.services.feature_maps.activations import ActivationStore, Capture, selectable_layers
from server.services.feature_maps.layer_overview import LayerOverview, LayerOverviews
from server.services.rendering import atlas
from server.services.runtime.architecture_catalog import ArchitectureCatalog
from server.services.runtime.inputs import ModelInputs
from server.services.runtime.model_runtime import LoadedModel
from server.services.runtime.outputs import ModelOutputs
from server.services.work.scheduler import Admit


class FeatureMaps:
    def __init__(self, activations: ActivationStore, overviews: LayerOverviews, architectures: ArchitectureCatalog,
                 inputs: ModelInputs, admit: Admit | None = None,
                 outputs: ModelOutputs | None = None) -> None:
        self.activations = activations
        self.overviews = overviews
        self.architectures = architectures
        self.inputs = inputs
        self._admit = admit  # held around every forward pass (admission control)
        self.outputs = outputs  # the logits of every capture are filed there

    def _admitter(self, loaded: LoadedModel) -> Callable[[], AbstractContextManager[Any]] | None:
        admit = self._admit
        if admit is None:
            return None
        return lambda: admit(f"capture/{loaded.entry.id}", "cheap")

    def layers(self, loaded: LoadedModel) -> list[dict[str, Any]]:
        """Rows of the architecture table whose output is a feature map or a vector."""
        return selectable_layers(self.architectures.get(loaded.entry)["layers"])

    def _batch(self, loaded: LoadedModel, image_id: str) -> Callable[[], torch.Tensor]:
        return lambda: self.inputs.batch(loaded, image_id)

    def output(self, loaded: LoadedModel, image_id: str, layer: str) -> np.ndarray:
        """The layer's float32 output for the image (C×H×W or F); 404 / 422 ApiErrors for bad layers."""
        layers = self.layers(loaded)
        names = [entry["name"] for entry in layers]
        # the first forward pass for an image also summarises every layer for the strip: no second pass
        summarise = None if self.overviews.has(loaded, image_id) else atlas.summarise_layer

        def adopt(captured: Capture) -> None:
            if summarise is not None:
                self.overviews.adopt(loaded, image_id, names, captured.reduced)
            if self.outputs is not None:
                self.outputs.remember(loaded, image_id, captured.logits)

        return self.activations.get(
            loaded, image_id, layer, layers, self._batch(loaded, image_id), self._admitter(loaded), summarise, adopt,
        )

    def overview(self, loaded: LoadedModel, image_id: str) -> LayerOverview:
        """Every layer's range and strongest channels for the image."""
        names = [layer["name"] for layer in self.layers(loaded)]
        return self.overviews.get(loaded, image_id, names, self._batch(loaded, image_id), self._admitter(loaded))

    def layout(self, loaded: LoadedModel, image_id: str, output: np.ndarray, scale: str, colormap: str,
               columns: int | None = None) -> atlas.AtlasLayout:
        """Atlas geometry and colour ranges; ``scale="global"`` uses the range over all layers."""
        global_range = self.overview(loaded, image_id).global_range if scale == "global" else None
        return atlas.layout(output, scale, colormap, columns, global_range)

