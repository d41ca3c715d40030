"""Max-pools run on a channels-last copy of their input (server/services/runtime/hooks.py,
channels_last_max_pools): the same numbers as plain PyTorch, bit for bit, forward and backward."""

from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image
from torch import nn

from models.registry import get_entry
from server.services.runtime.hooks import channels_last_max_pools
from tests.harness import SHARED_DATA

# the bundled model with max-pools (LeNet-5 and the MNIST nets average), and torchvision's (seeded untrained weights: the same arithmetic as trained ones),
# among them ceil_mode pools (GoogLeNet, SqueezeNet) and overlapping 3×3/2 ones (AlexNet, ResNet)
MODELS = ["tinyvgg-shapes", "alexnet", "resnet18", "googlenet", "squeezenet1_1"]
PHOTOS = ["cat.jpg", "zebra.jpg"]


def photo_batch(entry) -> torch.Tensor:  # noqa: ANN001
    preprocess = entry.make_preprocess()
    pictures = []
    for name in PHOTOS:
        with Image.open(SHARED_DATA / "images" / name) as image:
            pictures.append(preprocess(image.convert("RGB")))
    return torch.stack(pictures)


@pytest.mark.parametrize("model_id", MODELS)
def test_hooked_pools_give_plain_pytorchs_numbers_exactly(model_id: str) -> None:
    entry = get_entry(model_id)
    torch.manual_seed(0)
    plain = entry.build(trained=False).eval()
    hooked = copy.deepcopy(plain)
    assert channels_last_max_pools(hooked) == sum(type(m) is nn.MaxPool2d for m in plain.modules()) > 0
    batch = photo_batch(entry)
    with torch.inference_mode():
        assert torch.equal(hooked(batch), plain(batch))
        assert torch.equal(hooked(batch[:1]), plain(batch[:1]))
    # a gradient through the pools (vanilla gradients, guided backprop) keeps plain PyTorch's layout and routing
    grads = []
    for model in (plain, hooked):
        x = batch.clone().requires_grad_(True)
        model(x)[:, 3].sum().backward()
        grads.append(x.grad)
    assert torch.equal(grads[0], grads[1])


def test_a_loaded_model_has_them_and_a_pool_layers_feature_maps_keep_the_usual_layout(client) -> None:  # noqa: ANN001
    loaded = client.app.state.runtime.load("resnet18", "untrained")
    pool = loaded.module.maxpool
    assert len(pool._forward_pre_hooks) == 1 and len(pool._forward_hooks) == 1
    seen = []
    handle = pool.register_forward_hook(lambda module, args, output: seen.append(output.is_contiguous()))
    try:
        with torch.inference_mode():
            loaded.module(torch.zeros(1, 3, 224, 224))
    finally:
        handle.remove()
    assert seen == [True]
