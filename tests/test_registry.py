"""Schema test over every registry entry, in the spirit of torchvision's test_models meta checks."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from models.registry import TORCHVISION_MODELS, get_entry, list_models

ENTRIES = list_models()
STATES = {"bundled", "cached", "downloadable", "untrained", "unavailable"}


def test_registry_lists_bundled_and_torchvision_models() -> None:
    ids = [e.id for e in ENTRIES]
    assert len(ids) == len(set(ids))
    assert {"lenet5", "mnist-shallow", "mnist-deep", "tinyvgg-shapes"} <= set(ids)
    assert {spec[0] for spec in TORCHVISION_MODELS} == {
        "alexnet", "vgg16", "resnet18", "resnet50", "googlenet", "mobilenet_v3_small", "squeezenet1_1", "densenet121"
    }
    assert {spec[0] for spec in TORCHVISION_MODELS} <= set(ids)
    with pytest.raises(KeyError):
        get_entry("no-such-model")


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.id)
def test_entry_schema(entry) -> None:  # type: ignore[no-untyped-def]
    assert entry.title and entry.dataset and entry.description
    assert entry.family in ("bundled", "torchvision", "timm")
    assert entry.input.channels in (1, 3) and entry.input.height > 0 and entry.input.width > 0
    assert len(entry.categories) == entry.num_classes > 1
    assert all(isinstance(c, str) and c for c in entry.categories)
    status = entry.weights.status()
    assert status.state in STATES and status.detail
    if entry.family == "bundled":
        assert status.state == "bundled", status.detail

    model = entry.build_untrained()
    modules = dict(model.named_modules())
    assert entry.target_layer in modules, "the default Grad-CAM layer must exist"

    preprocess = entry.make_preprocess()
    image = Image.new("RGB", (97, 61), (200, 30, 90))
    tensor = preprocess(image)
    assert tensor.dtype == torch.float32
    assert tuple(tensor.shape) == (entry.input.channels, entry.input.height, entry.input.width)

    captured = {}
    handle = modules[entry.target_layer].register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    try:
        with torch.no_grad():
            logits = model(tensor[None])
    finally:
        handle.remove()
    assert tuple(logits.shape) == (1, entry.num_classes)
    assert captured["out"].dim() == 4, "Grad-CAM's default layer must have spatial output"


def test_untrained_initialisation_is_reproducible() -> None:
    entry = get_entry("resnet18")
    a, b = entry.build_untrained(), entry.build_untrained()
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name
    before = torch.rand(1)
    entry.build_untrained()
    torch.manual_seed(int(before.item() * 1e6))  # the global RNG is untouched by building
