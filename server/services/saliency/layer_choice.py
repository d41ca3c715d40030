"""Which layer a saliency map is taken at: one function for every caller (the HTTP API, the page through
``default_layer`` in the model's description, live mode, ``convscope explain``, the kept forward pass).

A request that names no layer gets the model's default (``ModelEntry.target_layer``): set by a bundled
model where it was chosen on real photos (EfficientNet-Lite0: ``conv_head``, see
``tests/test_saliency_default_layer.py``), else found by the registry's rule when the model is registered
(:func:`models.registry.find_target_layer`).
"""

from __future__ import annotations

from models.registry import ModelEntry
from server.services.runtime.model_runtime import LoadedModel, ModelLayer


def default_layer(entry: ModelEntry) -> str:
    """The layer a saliency request that names none uses."""
    return entry.target_layer


def saliency_layer(loaded: LoadedModel, layer: str | None) -> ModelLayer:
    """``layer`` or the model's default, resolved once (404 ``unknown_layer``); ``server.deps`` resolves a
    request's ``?layer=`` with it."""
    return loaded.named_layer(layer or default_layer(loaded.entry))
