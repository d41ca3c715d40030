"""The network a run trains: its architecture as configured (dropout, batch norm, input of its dataset),
initialised from the run's seed, or from the bundled model's trained weights (``init="current"``). With dropout 0 and batch norm off it is exactly the bundled architecture
(same layer names), and seed 0 gives the registry's ``build_untrained()`` weights."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from models import architectures
from models.datasets import shapes
from models.training.config import RunConfig

INPUTS = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "shapes": (3, 64, 64)}
NUM_CLASSES = {"mnist": 10, "fashion-mnist": 10, "shapes": len(shapes.CLASSES)}
TITLES = {"lenet5": "LeNet-5", "mnist-shallow": "MNIST shallow", "mnist-deep": "MNIST deep", "tinyvgg-shapes": "TinyVGG"}


def architecture(config: RunConfig, classes: int | None = None, shape: tuple[int, int, int] | None = None
                 ) -> nn.Module:
    """The module tree, with PyTorch's default initialisation (from the global random state); ``classes`` and
    ``shape`` (C, H, W) default to the dataset's (an image folder gives its own)."""
    classes = classes if classes is not None else NUM_CLASSES[config.dataset]
    options = {"dropout": config.dropout, "batch_norm": config.batch_norm}
    if config.architecture == "lenet5":
        return architectures.LeNet5(classes, **options)
    if config.architecture == "mnist-shallow":
        return architectures.MnistShallow(classes, **options)
    if config.architecture == "mnist-deep":
        return architectures.MnistDeep(classes, **options)
    if config.architecture == "tinyvgg-shapes":
        channels, size, _ = shape if shape is not None else INPUTS[config.dataset]
        return architectures.TinyVGG(classes, in_channels=channels, size=size, **options)
    raise ValueError(f"no architecture {config.architecture!r}")


def build_network(config: RunConfig, classes: int | None = None, shape: tuple[int, int, int] | None = None
                  ) -> nn.Module:
    """The run's starting network, the same on every call for the same config."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = architecture(config, classes, shape)
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


def file_network(builder: Callable[[], nn.Module], seed: int, classes: int, shape: tuple[int, int, int],
                 state: dict[str, torch.Tensor] | None) -> nn.Module:
    """A models-file model as a run starts it: ``builder()``'s module tree, re-initialised (every module's
    ``reset_parameters``, seeded) or loaded with ``state`` (fine-tuning); when its output count is not
    ``classes``, its last ``nn.Linear`` is replaced by a new one with ``classes`` outputs (seeded). The same on
    every call; ValueError saying why when the model cannot be given ``classes`` outputs."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = builder()
        if state is None:
            for module in model.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
        else:
            try:
                model.load_state_dict(state)
            except (RuntimeError, ValueError, KeyError) as exc:
                raise ValueError(f"its weights do not fit its architecture ({str(exc).splitlines()[0]})") from None
        outputs = _outputs(model, shape)
        if outputs != classes:
            _replace_head(model, outputs, classes)
            if _outputs(model, shape) != classes:
                raise ValueError(f"after replacing its last Linear layer it still gives {outputs} outputs, not the "
                                 f"dataset's {classes} classes")
    return model


def _outputs(model: nn.Module, shape: tuple[int, int, int]) -> int:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *shape))
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ValueError(f"its output is not batch × classes (shape {tuple(getattr(out, 'shape', ()))})")
    return int(out.shape[1])


def _replace_head(model: nn.Module, outputs: int, classes: int) -> None:
    heads = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == outputs]
    if not heads:
        raise ValueError(f"it gives {outputs} outputs and the dataset has {classes} classes, and its output does not "
                         "come from an nn.Linear layer that could be given one output per class")
    name, head = heads[-1]
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, nn.Linear(head.in_features, classes, bias=head.bias is not None))


def network_cost(builder: Callable[[], nn.Module], shape: tuple[int, int, int]) -> tuple[int, int]:
    """(parameters, forward FLOPs of one image) of ``builder()``'s network (PyTorch's FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.random.fork_rng(devices=[]):
        model = builder().eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(torch.zeros(1, *shape))
    except Exception as exc:  # noqa: BLE001 (a model that cannot run once on its own input)
        raise ValueError(f"it cannot run once on a {'×'.join(map(str, shape))} input ({type(exc).__name__}: {exc})"
                         ) from None
    return sum(p.numel() for p in model.parameters()), int(counter.get_total_flops())
