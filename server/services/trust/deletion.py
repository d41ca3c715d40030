"""Deletion and insertion curves (Petsiuk et al., 2018, RISE): is the map's order the order that matters?

Deletion replaces the model input's pixels with a baseline in the map's order, most important first, in
``k`` steps, and records the class probability; insertion starts from the baseline and puts the pixels
back in the same order. A faithful map makes the deletion curve fall fast (low area) and the insertion
curve rise fast (high area). A random pixel order, seeded, gives the areas to beat.

- Order: the display map's values at input resolution, largest first; equal values (a CAM's zeros) are
  ordered randomly with the seed, not in raster order.
- Step i (0…k) changes the first n_i = round(i·N/k) of the N pixels (every channel of a pixel at once).
- Baselines, in the model's input space: ``blur``: the input blurred by a Gaussian (σ = max(2, side·5/224)
  pixels, kernel 2·⌈3σ⌉+1, reflected at the borders); ``mean``: the normalisation's mean colour (the dataset
  mean the model was trained with), which is 0 after normalisation.
- AUC: the trapezoid rule over the fraction of pixels changed, x_i = n_i / N in [0, 1].
- Cost: deletion and insertion share their end points (deletion's last image is insertion's first), so
  2k images go through the model, in batches.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as TF

from server.services.runtime.cache import ResultCache
from server.services.runtime.inputs import ModelInputs, input_picture
from server.services.runtime.model_runtime import LoadedModel
from server.services.saliency.service import SaliencyKey, SaliencyMaps
from server.services.work.cancel import checkpoint
from server.services.work.scheduler import Admit

BASELINES = ("blur", "mean")
AUC_RULE = "trapezoid rule over the fraction of pixels changed, x_i = n_i / N with n_i = round(i*N/k), in [0, 1]"


def blur_sigma(height: int, width: int) -> float:
    return max(2.0, max(height, width) * 5.0 / 224.0)


def baseline_input(x: torch.Tensor, baseline: str) -> torch.Tensor:
    """The baseline image for ``x`` (1×C×H×W, normalised), same shape and device."""
    if baseline == "mean":
        return torch.zeros_like(x)
    sigma = blur_sigma(int(x.shape[-2]), int(x.shape[-1]))
    kernel = 2 * math.ceil(3 * sigma) + 1
    limit = 2 * min(int(x.shape[-2]), int(x.shape[-1])) - 1  # reflect padding needs the kernel within the image
    kernel = min(kernel, limit if limit % 2 else limit - 1)
    return TF.gaussian_blur(x, [kernel, kernel], [sigma, sigma])


def describe_baseline(baseline: str, height: int, width: int) -> str:
    if baseline == "mean":
        return "the dataset's mean colour (the model's normalisation mean)"
    return f"the image blurred (Gaussian, sigma {blur_sigma(height, width):.1f} px)"


def map_order(values: np.ndarray, seed: int) -> np.ndarray:
    """Pixel indices (raster order of H×W) from most to least important; ties in a seeded random order."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    tiebreak = np.random.default_rng([int(seed), 1]).permutation(flat.size)
    return np.lexsort((tiebreak, -flat)).astype(np.int64)


def random_order(size: int, seed: int) -> np.ndarray:
    return np.random.default_rng([int(seed), 2]).permutation(size).astype(np.int64)


def changed_counts(size: int, steps: int) -> list[int]:
    return [round(i * size / steps) for i in range(steps + 1)]


def auc(fractions: list[float], values: list[float]) -> float:
    return float(np.trapezoid(np.asarray(values, dtype=np.float64), np.asarray(fractions, dtype=np.float64)))


def curves(module: torch.nn.Module, x: torch.Tensor, baseline: torch.Tensor, order: np.ndarray, target: int,
           steps: int, batch_size: int, admit: Admit | None = None, label: str = "trust/deletion",
           checkpoint: Callable[[], None] | None = None) -> tuple[list[float], list[float]]:
    """(deletion, insertion) class probabilities, k+1 each, for ``order`` on ``x`` (1×C×H×W); each batch is
    admitted as heavy work labelled ``label``.

    The 2k distinct images are built batch by batch from a rank map (no k×H×W masks kept) and run through
    ``module`` in inference mode, ``batch_size`` at a time."""
    height, width = int(x.shape[-2]), int(x.shape[-1])
    size = height * width
    counts = changed_counts(size, steps)
    rank = torch.empty(size, dtype=torch.int64)
    rank[torch.from_numpy(np.ascontiguousarray(order))] = torch.arange(size)
    rank = rank.reshape(1, 1, height, width).to(x.device)
    # (deletion?, step): deletion 0..k, insertion 1..k-1 (insertion 0 = deletion k, insertion k = deletion 0)
    jobs = [(True, i) for i in range(steps + 1)] + [(False, i) for i in range(1, steps)]
    probs: list[float] = []
    for start in range(0, len(jobs), max(1, batch_size)):
        chunk = jobs[start:start + batch_size]
        n = torch.tensor([counts[i] for _, i in chunk], device=x.device).reshape(-1, 1, 1, 1)
        changed = rank < n  # B×1×H×W: the first n_i pixels of the order
        deleting = torch.tensor([d for d, _ in chunk], device=x.device).reshape(-1, 1, 1, 1)
        batch = torch.where(changed == deleting, baseline, x)
        with admit(label, "heavy") if admit is not None else nullcontext(), torch.inference_mode():
            logits = module(batch)
            probs.extend(torch.softmax(logits.float(), dim=-1)[:, target].tolist())
        if checkpoint is not None:
            checkpoint()
    deletion = probs[: steps + 1]
    insertion = [deletion[steps], *probs[steps + 1:], deletion[0]]
    return deletion, insertion


def fractions(height: int, width: int, steps: int) -> list[float]:
    size = height * width
    return [n / size for n in changed_counts(size, steps)]


class DeletionCurves:
    """deletion.json: the method's map (from the saliency service and its cache), both curves for its order
    and for a random order, cached in one :class:`ResultCache`; the forward batches are heavy work."""

    def __init__(self, inputs: ModelInputs, maps: SaliencyMaps, admit: Admit, cache: ResultCache[Any],
                 batch_size: int) -> None:
        self.inputs = inputs
        self.maps = maps
        self.admit = admit
        self.cache = cache
        self.batch_size = max(1, batch_size)

    def compute(self, loaded: LoadedModel, key: SaliencyKey, steps: int, baseline: str, seed: int) -> dict[str, Any]:
        """``key``: the saliency map's key (model, weights, image, method, layer, target or None)."""
        cache_key = ("deletion", key, steps, baseline, seed)
        return self.cache.get_or_compute(cache_key, lambda: self._compute(loaded, key, steps, baseline, seed))

    def order(self, loaded: LoadedModel, key: SaliencyKey, seed: int, random: bool = False) -> np.ndarray:
        """The pixel order the curves used (int64 indices into the H×W raster)."""
        if random:
            x = self.inputs.tensor(loaded, key.image_id)
            return random_order(int(x.shape[-2]) * int(x.shape[-1]), seed)
        return map_order(self.maps.map(loaded, key).values, seed)

    def baseline_png(self, loaded: LoadedModel, image_id: str, baseline: str) -> bytes:
        """The baseline image as a picture (the normalisation undone), for the page's playback."""
        tensor = baseline_input(self.inputs.tensor(loaded, image_id)[None], baseline)[0]
        buf = io.BytesIO()
        input_picture(loaded, tensor).save(buf, format="PNG")
        return buf.getvalue()

    def _compute(self, loaded: LoadedModel, key: SaliencyKey, steps: int, baseline: str, seed: int) -> dict[str, Any]:
        saliency = self.maps.map(loaded, key)  # admitted by the saliency service itself
        x = self.inputs.batch(loaded, key.image_id)
        base = baseline_input(x, baseline)
        height, width = int(x.shape[-2]), int(x.shape[-1])
        label = f"trust/deletion/{loaded.entry.id}"

        def run(order: np.ndarray) -> tuple[list[float], list[float]]:
            return curves(loaded.module, x, base, order, saliency.target, steps, self.batch_size,
                          admit=self.admit, label=label, checkpoint=checkpoint)

        xs = fractions(height, width, steps)
        deletion, insertion = run(map_order(saliency.values, seed))
        random_deletion, random_insertion = run(random_order(height * width, seed))
        return {
            "target": {"index": saliency.target, "label": saliency.label, "probability": saliency.probability},
            "steps": steps,
            "baseline": baseline,
            "baseline_description": describe_baseline(baseline, height, width),
            "seed": seed,
            "fractions": xs,
            "deletion": deletion,
            "insertion": insertion,
            "deletion_auc": auc(xs, deletion),
            "insertion_auc": auc(xs, insertion),
            "random": {"deletion": random_deletion, "insertion": random_insertion,
                       "deletion_auc": auc(xs, random_deletion), "insertion_auc": auc(xs, random_insertion)},
            "auc_rule": AUC_RULE,
        }
