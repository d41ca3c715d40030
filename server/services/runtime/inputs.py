"""The tensor a model sees for a stored image, cached per (model, image), and that tensor as a picture."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from PIL import Image

from server.errors import ApiError
from server.services.images.store import ImageStore
from server.services.runtime.cache import ResultCache
from server.services.runtime.model_runtime import LoadedModel


class ModelInputs:
    """Preprocessed inputs of stored images (float32 C×H×W on the CPU) in a :class:`ResultCache`."""

    def __init__(self, store: ImageStore, budget_bytes: int = 64 * 1024 * 1024) -> None:
        self.store = store
        self.cache: ResultCache[torch.Tensor] = ResultCache("model inputs", budget_bytes)
        store.model_inputs = self  # for input_batch() callers that hold only the store

    def tensor(self, loaded: LoadedModel, image_id: str) -> torch.Tensor:
        """Exactly what ``input.npy`` serves and the model is fed."""
        # Preprocessing depends on the model, not on its weights variant.
        return self.cache.get_or_compute(
            (loaded.entry.id, image_id),
            lambda: loaded.preprocess(self.store.open_image(image_id)).contiguous(),
        )

    def prepare(self, image_id: str, models: Iterable[LoadedModel]) -> None:
        """Make a just-stored image's input tensor for each of ``models`` now (the models loaded, i.e. the ones the
        pages use), from the upload's own decoded copy while the store still holds it: the first view of the
        new image then starts with its forward pass. A model whose preprocessing refuses the image is left to
        say so when it is asked for; the upload itself stands."""
        for loaded in {m.entry.id: m for m in models}.values():
            try:
                self.tensor(loaded, image_id)
            except ApiError:
                continue

    def batch(self, loaded: LoadedModel, image_id: str) -> torch.Tensor:
        """1×C×H×W on the model's device."""
        return self.tensor(loaded, image_id).unsqueeze(0).to(loaded.device)


def input_batch(loaded: LoadedModel, store: ImageStore, image_id: str) -> torch.Tensor:
    """1×C×H×W on the model's device, through the store's :class:`ModelInputs` (its cache) when the app
    made one, else preprocessed afresh."""
    inputs = getattr(store, "model_inputs", None)
    if isinstance(inputs, ModelInputs):
        return inputs.batch(loaded, image_id)
    return loaded.preprocess(store.open_image(image_id)).contiguous().unsqueeze(0).to(loaded.device)


def input_picture(loaded: LoadedModel, tensor: torch.Tensor) -> Image.Image:
    """The model's input shown as a picture: the preprocessing's normalisation undone (x·std + mean)."""
    arr = tensor.detach().cpu().numpy().astype(np.float64)
    channels = arr.shape[0]
    mean = np.asarray(loaded.preprocess_fn.mean, dtype=np.float64).reshape(-1, 1, 1)
    std = np.asarray(loaded.preprocess_fn.std, dtype=np.float64).reshape(-1, 1, 1)
    if mean.shape[0] != channels:
        mean, std = np.resize(mean, (channels, 1, 1)), np.resize(std, (channels, 1, 1))
    pixels = np.clip((arr * std + mean) * 255.0, 0, 255).round().astype(np.uint8)
    if channels == 1:
        return Image.fromarray(pixels[0], mode="L")
    return Image.fromarray(pixels[:3].transpose(1, 2, 0), mode="RGB")
