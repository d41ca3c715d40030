"""The sandbox's 1×1 convolution over several channels equals torch's conv2d with a 1×1 kernel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from server.errors import ApiError
from server.services.sandbox.operations import mix_channels


def test_mix_equals_a_one_by_one_conv2d() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4, 5))
    w = rng.normal(size=(2, 3))
    b = rng.normal(size=2)
    answer = mix_channels(x.tolist(), w.tolist(), b.tolist())
    ref = F.conv2d(torch.from_numpy(x)[None], torch.from_numpy(w)[:, :, None, None], torch.from_numpy(b))[0]
    np.testing.assert_allclose(np.array(answer["output"]), ref.numpy(), rtol=1e-12, atol=1e-12)
    products = np.array(answer["products"])
    np.testing.assert_allclose(products.sum(axis=1) + b[:, None, None], ref.numpy(), rtol=1e-12, atol=1e-12)
    assert answer["parameters"] == sum(p.numel() for p in torch.nn.Conv2d(3, 2, 1).parameters())


@pytest.mark.parametrize(("channels", "weights", "bias", "code"), [
    ([], [[1]], None, "invalid_channels"),
    ([[[1, 2]], [[1]]], [[1, 1]], None, "invalid_channels"),
    ([[[1, 2]]], [[1, 1]], None, "invalid_weights"),
    ([[[1, 2]]], [[1]], [1, 2], "invalid_bias"),
    ([[[1.0] * 9]], [[1]], None, "channel_too_large"),
    ([[[1]]] * 9, [[1] * 9], None, "invalid_channels"),
])
def test_bad_mixes_are_clear_errors(channels, weights, bias, code) -> None:
    with pytest.raises(ApiError) as info:
        mix_channels(channels, weights, bias)
    assert info.value.status == 422 and info.value.code.startswith(code)


def test_mix_endpoint(client) -> None:
    response = client.post("/api/sandbox/mix", json={"channels": [[[1, 2], [3, 4]], [[0, 1], [1, 0]]], "weights": [[1, -1], [0.5, 2]], "bias": [0, 1]})
    assert response.status_code == 200, response.text
    assert response.json()["output"] == [[[1, 1], [2, 4]], [[1.5, 4], [4.5, 3]]]
    bad = client.post("/api/sandbox/mix", json={"channels": [[[1]]], "weights": [[1, 2]]})
    assert bad.status_code == 422 and bad.json()["error"]["message"]
