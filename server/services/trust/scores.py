"""How alike two saliency maps are, as Adebayo et al. (2018) score the randomisation test, and the verdict.

- Spearman: the absolute value of the rank correlation of the two maps' values at input resolution
  (ties share their average rank, as ``scipy.stats.spearmanr`` ranks them).
- SSIM: scikit-image's ``structural_similarity`` with its defaults on both maps min–max scaled to [0, 1]
  (``data_range`` 1).

A map that is constant (a CAM the ReLU zeroed everywhere) has no ranking: its correlation with anything
is reported as 0 and the step is marked ``flat``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import rankdata
from skimage.metrics import structural_similarity

PASS_THRESHOLD = 0.5  # Spearman above this after the top half is randomised: the map ignores the weights


def abs_spearman(a: np.ndarray, b: np.ndarray) -> float:
    """|Spearman rank correlation| of two equally shaped maps (0 when either is constant)."""
    ra = rankdata(np.asarray(a, dtype=np.float64).ravel())
    rb = rankdata(np.asarray(b, dtype=np.float64).ravel())
    ra -= ra.mean()
    rb -= rb.mean()
    denominator = math.sqrt(float(ra @ ra) * float(rb @ rb))
    if denominator == 0.0:
        return 0.0
    return abs(float(ra @ rb) / denominator)


def unit_scaled(a: np.ndarray) -> np.ndarray:
    """Min–max scaled to [0, 1] (float64); a constant map becomes zeros."""
    a = np.asarray(a, dtype=np.float64)
    low, high = float(a.min()), float(a.max())
    return (a - low) / (high - low) if high > low else np.zeros_like(a)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of the two maps scaled to [0, 1], scikit-image's defaults (7×7 uniform window)."""
    x, y = unit_scaled(a), unit_scaled(b)
    side = min(x.shape)
    win = 7 if side >= 7 else (side if side % 2 else side - 1)
    return float(structural_similarity(x, y, data_range=1.0, win_size=max(3, win)))


def is_flat(a: np.ndarray) -> bool:
    return bool(np.ptp(a) == 0)


def compare(original: np.ndarray, randomised: np.ndarray) -> dict[str, Any]:
    """The step's scores for one method."""
    return {"spearman": abs_spearman(original, randomised), "ssim": ssim(original, randomised),
            "flat": is_flat(randomised)}


def half_step(steps: int) -> int:
    """The step after which the top half of the cascade is randomised (steps counted, rounded up)."""
    return max(1, math.ceil(steps / 2))


def verdict(method_title: str, spearmans: list[float], steps: int) -> dict[str, Any]:
    """Pass or fail for one method: ``spearmans[i]`` is the score after step i+1 of ``steps``."""
    half = half_step(steps)
    at_half = spearmans[half - 1]
    passes = at_half <= PASS_THRESHOLD
    if passes:
        words = (f"{method_title} passes: once the top {half} of {steps} steps are randomised its map keeps a rank "
                 f"correlation of only {at_half:.2f} with the original, so the map depends on what the model learned.")
    else:
        words = (f"{method_title} fails: with the top {half} of {steps} steps randomised (the model no longer knows "
                 f"its classes) its map still has a rank correlation of {at_half:.2f} with the original. Much of "
                 "what it shows comes from the image and the architecture (edges, the input's structure), not "
                 "from what the model learned; treat it as an edge picture rather than an explanation.")
    return {"passes": passes, "half_step": half, "spearman_at_half": at_half, "threshold": PASS_THRESHOLD,
            "explanation": words}
