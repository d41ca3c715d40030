"""The tensor a model sees for a stored image, cached per (model, variant, image)."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import torch
from PIL import Image

from server.services.image_store import ImageStore
from server.services.model_runtime import LoadedModel

_CACHE_ITEMS = 64
_cache: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
_cache_lock = threading.Lock()


def input_tensor(loaded: LoadedModel, store: ImageStore, image_id: str) -> torch.Tensor:
    """Float32 C×H×W on the CPU: exactly what ``input.npy`` serves and the model is fed."""
    # Preprocessing depends on the model, not on its weights variant.
    key = (loaded.entry.id, image_id)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    image = store.open_image(image_id)
    tensor = loaded.preprocess(image).contiguous()
    with _cache_lock:
        _cache[key] = tensor
        while len(_cache) > _CACHE_ITEMS:
            _cache.popitem(last=False)
    return tensor


def input_batch(loaded: LoadedModel, store: ImageStore, image_id: str) -> torch.Tensor:
    """1×C×H×W on the model's device."""
    return input_tensor(loaded, store, image_id).unsqueeze(0).to(loaded.device)


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
