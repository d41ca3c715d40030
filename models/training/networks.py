"""The network a run trains: its architecture as configured (dropout, batch norm, input of its dataset),
initialised from the run's seed, or from the bundled model's trained weights (``init="current"``). With dropout 0 and batch norm off it is exactly the bundled architecture
(same layer names), and seed 0 gives the registry's ``build_untrained()`` weights."""

from __future__ import annotations

import math

import torch
from torch import nn

from models import architectures
from models.datasets import shapes
from models.training.config import RunConfig

INPUTS = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "shapes": (3, 64, 64)}
NUM_CLASSES = {"mnist": 10, "fashion-mnist": 10, "shapes": len(shapes.CLASSES)}


def architecture(config: RunConfig) -> nn.Module:
    """The module tree, with PyTorch's default initialisation (from the global random state)."""
    classes = NUM_CLASSES[config.dataset]
    options = {"dropout": config.dropout, "batch_norm": config.batch_norm}
    if config.architecture == "lenet5":
        return architectures.LeNet5(classes, **options)
    if config.architecture == "mnist-shallow":
        return architectures.MnistShallow(classes, **options)
    if config.architecture == "mnist-deep":
        return architectures.MnistDeep(classes, **options)
    if config.architecture == "tinyvgg-shapes":
        channels, size, _ = INPUTS[config.dataset]
        return architectures.TinyVGG(classes, in_channels=channels, size=size, **options)
    raise ValueError(f"no architecture {config.architecture!r}")


def build_network(config: RunConfig) -> nn.Module:
    """The run's starting network, the same on every call for the same config."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = architecture(config)
    if config.kaiming_init:
        kaiming_init(model, torch.Generator().manual_seed(config.seed))
    if config.init == "current":  # fine-tuning: the bundled model's trained weights (same layers, same shapes)
        from models.registry import get_entry  # deferred: the registry imports torchvision

        model.load_state_dict(get_entry(config.architecture).weights.load_state_dict())
    return model


def kaiming_init(model: nn.Module, generator: torch.Generator) -> None:
    """He-normal (fan-in, ReLU gain) weights and zero biases for every convolution and linear layer."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * math.sqrt(2.0 / fan_in))
                module.bias.zero_()


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The first convolution (its filters are what the Train view shows forming)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ValueError("the network has no convolution")
