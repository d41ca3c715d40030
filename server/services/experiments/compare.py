"""Two networks on one image: their layers matched, and how alike the matched layers' outputs are.

Layers are the models' layers over depth (:func:`~server.services.experiments.layer_split.depth_layers`:
top-level children, Sequentials opened one level) that output a feature map or a vector. When both models
have the same architecture (the same layer names with the same module types) layers are matched by name;
otherwise each layer of the first is matched with the layer of the second at the same fraction of depth.
Matched outputs of the same shape get the cosine similarity of their flattened values (float64); other
pairs get none (there is no meaningful cosine between tensors of different shapes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from server.services.experiments.layer_split import depth_layers


@dataclass(frozen=True)
class LayerMatch:
    name: str
    with_name: str
    cosine: float | None
    shape: tuple[int, ...]
    with_shape: tuple[int, ...]


def same_architecture(a: nn.Module, b: nn.Module) -> bool:
    """The same layer names with the same module types (as a trained and an untrained copy have)."""
    types_a = [(name, type(m).__name__) for name, m in a.named_modules()]
    types_b = [(name, type(m).__name__) for name, m in b.named_modules()]
    return types_a == types_b


def compared_layers(model: nn.Module) -> list[str]:
    return depth_layers(model)


def match_layers(names: list[str], with_names: list[str], by_name: bool) -> list[tuple[str, str]]:
    """Pairs (layer of the first model, layer of the second): by name, or by fraction of depth."""
    if by_name:
        present = set(with_names)
        return [(name, name) for name in names if name in present]
    if not names or not with_names:
        return []
    last, with_last = len(names) - 1, len(with_names) - 1
    return [(name, with_names[round(i * with_last / last) if last else with_last]) for i, name in enumerate(names)]


def cosine(a: np.ndarray, b: np.ndarray) -> float | None:
    """Cosine similarity of the flattened arrays (float64); None when their shapes differ or one is zero."""
    if a.shape != b.shape:
        return None
    x, y = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    norm = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(np.dot(x, y) / norm) if norm > 0 else None


def compare_outputs(outputs: dict[str, np.ndarray], with_outputs: dict[str, np.ndarray],
                    pairs: list[tuple[str, str]]) -> list[LayerMatch]:
    """Each pair whose two layers ran, with the cosine of their outputs."""
    found = []
    for name, with_name in pairs:
        if name in outputs and with_name in with_outputs:
            a, b = outputs[name], with_outputs[with_name]
            found.append(LayerMatch(name, with_name, cosine(a, b), tuple(a.shape), tuple(b.shape)))
    return found
