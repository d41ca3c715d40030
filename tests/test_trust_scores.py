"""The randomisation check's scores against scipy and scikit-image, and the pass/fail rule."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

from server.services.trust.scores import abs_spearman, compare, half_step, ssim, verdict


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spearman_equals_scipy_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.random((28, 28)).astype(np.float32)
    b = (0.3 * a + rng.random((28, 28))).astype(np.float32)
    a[a < 0.4] = 0.0  # a CAM's ReLU: many tied zeros
    b = np.round(b, 1)  # percentile clipping and quantisation: more ties
    expected = abs(spearmanr(a.ravel(), b.ravel()).statistic)
    assert abs(abs_spearman(a, b) - expected) < 1e-6
    assert abs(abs_spearman(a, -b) - expected) < 1e-6  # the absolute value


def test_ssim_equals_skimage_on_unit_scaled_maps() -> None:
    rng = np.random.default_rng(4)
    a = rng.random((64, 64)) * 3 + 1
    b = a + rng.normal(0, 0.5, a.shape)
    sa = (a - a.min()) / (a.max() - a.min())
    sb = (b - b.min()) / (b.max() - b.min())
    assert abs(ssim(a, b) - structural_similarity(sa, sb, data_range=1.0)) < 1e-9


def test_constant_map_has_no_correlation() -> None:
    a = np.random.default_rng(0).random((28, 28))
    scores = compare(a, np.zeros_like(a))
    assert scores["spearman"] == 0.0 and scores["flat"] is True


def test_rule_counts_steps_and_reads_the_half_way_score() -> None:
    assert [half_step(n) for n in (1, 4, 5, 10, 11)] == [1, 2, 3, 5, 6]
    failing = verdict("Guided Backprop", [0.9, 0.8, 0.7, 0.2, 0.1], 5)
    assert not failing["passes"] and failing["half_step"] == 3 and failing["spearman_at_half"] == 0.7
    assert "fails" in failing["explanation"] and "0.70" in failing["explanation"]
    passing = verdict("Grad-CAM", [0.6, 0.4, 0.5, 0.2, 0.1], 5)
    assert passing["passes"] and "passes" in passing["explanation"]
