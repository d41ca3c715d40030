"""Small models the saliency tests run on: TinyVGG and a little residual net with batch norm and in-place
ReLUs (the torchvision pattern that trips up hook-based methods), wrapped as LoadedModels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.saliency_support import (
    HAND_GEOMETRY,
    aligned_upsample,
    hooks_left,
    small_models,
)


def test_small_models_are_frozen_and_run() -> None:
    for name, (loaded, x) in small_models().items():
        logits = loaded.module(x)
        assert logits.shape == (1, loaded.entry.num_classes), name
        assert not logits.requires_grad, name  # frozen parameters: no graph unless a method asks for one
        assert hooks_left(loaded.module) == 0


def test_traced_geometry_matches_the_hand_derivation() -> None:
    from server.services.runtime.architecture_catalog import ArchitectureCatalog

    catalog = ArchitectureCatalog()
    for name, (loaded, _) in small_models().items():
        geometry = catalog.geometry(loaded.entry, loaded.entry.target_layer)
        start, jump = HAND_GEOMETRY[name]
        assert geometry is not None and geometry.start == (start, start) and geometry.jump == (jump, jump), name


def test_aligned_upsampling_puts_each_unit_on_its_receptive_field_centre() -> None:
    from server.services.runtime.architecture_catalog import LayerGeometry
    from server.services.saliency.scaling import upsample

    raw = torch.zeros(1, 26, 26)
    raw[0, 3, 20] = 1.0
    up = upsample(raw, (64, 64), LayerGeometry((6.5, 6.5), (2.0, 2.0)))[0]
    # unit (3, 20) is centred on pixel (12.5, 46.5): the two pixels either side share the peak
    peak = float(up.max())
    for row, col in ((12, 46), (12, 47), (13, 46), (13, 47)):
        assert float(up[row, col]) == pytest.approx(peak, abs=1e-6)
    assert float(up[11, 46]) < peak and float(up[12, 45]) < peak
    np.testing.assert_allclose(up.numpy(), aligned_upsample(raw[0].numpy(), 64, 6.5, 2.0), atol=1e-6)
    plain = upsample(raw, (64, 64))[0]
    assert int(plain.argmax()) // 64 != 12  # a plain resize would have put it elsewhere
