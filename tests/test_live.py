"""server/services/live/hub.py without a socket: the one-slot mailbox, the compact atlas, and
one frame's forward pass against plain PyTorch."""

from __future__ import annotations

from dataclasses import replace
from io import BytesIO

import anyio
import numpy as np
import pytest
import torch
from PIL import Image

from server.services.live.frame import compact_atlas, forward, resolve_config
from server.services.live.hub import Frame, FrameSlot
from server.services.rendering import atlas
from server.services.runtime.architecture_catalog import ArchitectureCatalog
from server.services.runtime.model_runtime import ModelRuntime
from tests.harness import assert_no_hooks


def test_the_slot_keeps_only_the_newest_frame() -> None:
    async def scenario() -> list[tuple[int, int]]:
        slot = FrameSlot()
        taken = []
        for number in range(1, 5):
            slot.put(Frame(number, b"x", 0.0))
        taken.append(await slot.take())
        assert not slot.waiting
        slot.put(Frame(5, b"y", 0.0))
        taken.append(await slot.take())
        with anyio.move_on_after(0.05) as waited:  # nothing waits: take() blocks
            await slot.take()
        assert waited.cancelled_caught
        return [(frame.number, replaced) for frame, replaced in taken]

    assert anyio.run(scenario) == [(4, 3), (5, 0)]


def test_compact_atlas_averages_tiles_and_keeps_the_true_range() -> None:
    rng = np.random.default_rng(0)
    output = rng.normal(size=(8, 40, 40)).astype(np.float32)
    png, described = compact_atlas(output, 8 * 20 * 20)
    assert described["downsampled"] == 2 and described["tile"] == {"height": 20, "width": 20}
    assert described["data_range"] == pytest.approx([float(output.min()), float(output.max())])
    pooled = output.reshape(8, 20, 2, 20, 2).mean(axis=(2, 4))
    spec = atlas.layout(output, "layer", "auto")
    got = np.asarray(Image.open(BytesIO(png)))
    expected = atlas.atlas_indices(pooled, replace(spec, tile_height=20, tile_width=20))
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1  # float sums in another order
    _, small = compact_atlas(output, 10**6)
    assert small["downsampled"] == 1 and small["tile"] == {"height": 40, "width": 40}


@pytest.mark.parametrize("method", [None, "gradcam", "eigencam"])
def test_one_frame_is_one_forward_pass_equal_to_pytorch(method: str | None) -> None:
    runtime = ModelRuntime(torch.device("cpu"))
    loaded = runtime.load("tinyvgg-shapes")
    config = resolve_config(loaded, ArchitectureCatalog(), "block1.1", method, None)
    x = torch.rand(3, 64, 64)
    calls = []
    counter = loaded.module.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        result = forward(config, x)
    finally:
        counter.remove()
    assert len(calls) == 1
    with torch.inference_mode():
        logits = loaded.module(x[None])[0]
        expected_layer = loaded.module.block1[:2](x[None])[0]
    torch.testing.assert_close(result.logits, logits)
    np.testing.assert_allclose(result.layer_output, expected_layer.numpy(), rtol=1e-5, atol=1e-6)
    if method is None:
        assert result.saliency is None
    else:
        assert result.saliency["target"] == int(logits.argmax())
        values = result.saliency["values"]
        assert values.shape == (64, 64) and values.min() >= 0 and values.max() <= 1
    assert_no_hooks(loaded.module)
