"""The model registry, in the spirit of torchvision's ``models/_api.py``: one open table of models.

Each :class:`ModelEntry` holds a builder (architecture with random, seeded initialisation), a weights
source that knows where trained weights come from and what state they are in, the class labels, the
input size and a preprocessing *constructor*. Every model — bundled, torchvision, timm, or defined in a
user's models file — goes into a :class:`ModelRegistry` through one function, :meth:`ModelRegistry.register`
(``register_model`` for the process-wide default); ``list_models()`` / ``get_entry(id)`` / ``get_model(id)``
are the lookup. Nothing here touches the network: a download happens only when a user asks for one.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models import architectures, efficientnet_lite
from models.datasets import shapes
from models.preprocessing import Preprocess, mnist_style, rgb_square, torchvision_transforms
from models.weight_sources import (  # noqa: F401  (re-exported: the registry is where people look)
    BundledWeights,
    HubWeights,
    LocalWeights,
    NoWeights,
    PackagedWeights,
    ProgressCallback,
    TimmCacheWeights,
    WeightsError,
    WeightsSource,
    WeightsStatus,
    hub_checkpoint_dir,
)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
UNTRAINED_SEED = 0
MODEL_ID = re.compile(r"[a-z0-9._-]+")


@dataclass(frozen=True)
class InputSpec:
    channels: int
    height: int
    width: int


@dataclass(frozen=True)
class ModelEntry:
    id: str
    title: str
    dataset: str
    family: str  # "bundled" | "torchvision" | "timm" | "file"
    input: InputSpec
    categories: tuple[str, ...]
    builder: Callable[[], nn.Module]
    make_preprocess: Callable[[], Preprocess]
    weights: WeightsSource
    # Grad-CAM's default layer; "" → found at registration (the last convolution whose output is spatial)
    target_layer: str = ""
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    problem: str = ""  # why this entry cannot be built at all (a bad models-file entry); "" when it can

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    def build_untrained(self) -> nn.Module:
        """The architecture with a fixed-seed random initialisation, the same on every call."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(UNTRAINED_SEED)
            model = self.builder()
        return model.eval()

    def build(self, trained: bool) -> nn.Module:
        model = self.build_untrained()
        if trained:
            state = self.weights.load_state_dict()
            try:
                model.load_state_dict(state)
            except (RuntimeError, ValueError, TypeError, AttributeError) as exc:
                # A readable file made for another architecture (wrong keys or shapes) is as unusable as a
                # corrupt one: report it, never crash the request.
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise WeightsError(f"the weights do not fit {self.id}'s architecture ({first_line})") from exc
        return model.eval()


MNIST_CLASSES = tuple(str(d) for d in range(10))


def _bundled(
    model_id: str,
    title: str,
    dataset: str,
    input_spec: InputSpec,
    categories: tuple[str, ...],
    builder: Callable[[], nn.Module],
    make_preprocess: Callable[[], Preprocess],
    target_layer: str,
    description: str,
) -> ModelEntry:
    return ModelEntry(
        id=model_id,
        title=title,
        dataset=dataset,
        family="bundled",
        input=input_spec,
        categories=categories,
        builder=builder,
        make_preprocess=make_preprocess,
        weights=BundledWeights(WEIGHTS_DIR / f"{model_id}.pt", WEIGHTS_DIR / f"{model_id}.metrics.json"),
        target_layer=target_layer,
        description=description,
    )


def _bundled_entries() -> list[ModelEntry]:
    grey28 = InputSpec(1, 28, 28)
    return [
        _bundled(
            "lenet5",
            "LeNet-5",
            "MNIST",
            grey28,
            MNIST_CLASSES,
            architectures.LeNet5,
            mnist_style,
            "features.4",
            "LeCun et al.'s 1998 digit recogniser: two tanh convolutions with average-pool subsampling.",
        ),
        _bundled(
            "mnist-shallow",
            "MNIST shallow CNN",
            "MNIST",
            grey28,
            MNIST_CLASSES,
            architectures.MnistShallow,
            mnist_style,
            "relu1",
            "One 5×5 stride-2 'same' convolution with 10 filters, then a 50-unit dense layer.",
        ),
        _bundled(
            "mnist-deep",
            "MNIST deep CNN",
            "MNIST",
            grey28,
            MNIST_CLASSES,
            architectures.MnistDeep,
            mnist_style,
            "relu3",
            "Three 5×5 'same' convolutions (10, 40, 80 filters), then a 50-unit dense layer.",
        ),
        _bundled(
            "tinyvgg-shapes",
            "TinyVGG (Shapes)",
            "Shapes (synthetic)",
            InputSpec(3, 64, 64),
            shapes.CLASSES,
            lambda: architectures.TinyVGG(num_classes=len(shapes.CLASSES)),
            lambda: rgb_square(64),
            "block2.3",
            "The CNN Explainer architecture on ConvScope's generated Shapes dataset, with known boxes.",
        ),
    ]


# torchvision ImageNet classifiers: (id, title, default Grad-CAM layer, description)
TORCHVISION_MODELS: tuple[tuple[str, str, str, str], ...] = (
    ("alexnet", "AlexNet", "features.11", "Krizhevsky et al. 2012: five convolutions, ReLU, overlapping max-pool."),
    ("vgg16", "VGG-16", "features.29", "Simonyan & Zisserman 2014: thirteen 3×3 convolutions in five blocks."),
    ("resnet18", "ResNet-18", "layer4", "He et al. 2015: residual basic blocks with batch norm."),
    ("resnet50", "ResNet-50", "layer4", "He et al. 2015: residual bottleneck blocks with batch norm."),
    ("googlenet", "GoogLeNet", "inception5b", "Szegedy et al. 2014: Inception modules with 1×1 reductions."),
    ("mobilenet_v3_small", "MobileNetV3 Small", "features.12", "Howard et al. 2019: depthwise-separable blocks."),
    ("squeezenet1_1", "SqueezeNet 1.1", "features.12", "Iandola et al. 2016: Fire modules of 1×1 squeeze layers."),
    ("densenet121", "DenseNet-121", "features.norm5", "Huang et al. 2017: densely connected blocks."),
)


def _torchvision_entry(model_id: str, title: str, target_layer: str, description: str) -> ModelEntry:
    import torchvision

    weights_enum = torchvision.models.get_model_weights(model_id).DEFAULT
    crop = weights_enum.transforms().crop_size[0]
    # torchvision builders download weights only when given a weights argument; we pass none and load
    # the state dict ourselves so that the cache state is always known and checked.
    extra: dict[str, Any] = {"init_weights": True} if model_id == "googlenet" else {}
    if model_id == "googlenet":
        extra.update(aux_logits=False, transform_input=False)

    def builder() -> nn.Module:
        return torchvision.models.get_model(model_id, weights=None, **extra)

    return ModelEntry(
        id=model_id,
        title=title,
        dataset="ImageNet-1k",
        family="torchvision",
        input=InputSpec(3, crop, crop),
        categories=tuple(weights_enum.meta["categories"]),
        builder=builder,
        make_preprocess=lambda: torchvision_transforms(weights_enum),
        weights=HubWeights(weights_enum.url),
        target_layer=target_layer,
        description=description,
        meta={"weights_enum": f"{type(weights_enum).__name__}.{weights_enum.name}", "num_params": weights_enum.meta.get("num_params")},
    )


@lru_cache(maxsize=1)
def imagenet_categories() -> tuple[str, ...]:
    """ImageNet-1k's class names as the torchvision models label them (one list everywhere)."""
    import torchvision

    return tuple(torchvision.models.ResNet18_Weights.DEFAULT.meta["categories"])


def efficientnet_entry() -> ModelEntry:
    return ModelEntry(
        id=efficientnet_lite.MODEL_ID,
        title="EfficientNet-Lite0",
        dataset="ImageNet-1k",
        family="timm",
        input=InputSpec(3, efficientnet_lite.INPUT_SIZE, efficientnet_lite.INPUT_SIZE),
        categories=imagenet_categories(),
        builder=efficientnet_lite.build,
        make_preprocess=efficientnet_lite.preprocess,
        weights=efficientnet_lite.WEIGHTS,
        description="Tan & Le's EfficientNet-Lite0 (timm tf_efficientnet_lite0): inverted-residual blocks of "
                    "1×1 and depthwise convolutions with batch norm and ReLU6; the official ImageNet weights, "
                    "shipped with the install.",
        # Chosen on the offline photos (boxes drawn by hand): at conv_head (and blocks.6, whose Grad-CAM is the
        # same map: conv_head is a 1×1 conv over it) the peak falls on the object; at blocks.5, the choice from
        # composites, it sits on the border for 7 of 9 (tests/test_saliency_default_layer.py). Set, and the
        # same layer the automatic rule finds, so the model through a models file gives the same maps.
        target_layer=efficientnet_lite.GRADCAM_LAYER,
        meta={"timm_name": efficientnet_lite.TIMM_NAME},
    )


def timm_entry(model_id: str, timm_name: str, title: str = "", *, kwargs: dict[str, Any] | None = None,
               categories: tuple[str, ...] | None = None, weights: WeightsSource | None = None,
               input_spec: InputSpec | None = None, make_preprocess: Callable[[], Preprocess] | None = None,
               target_layer: str = "", description: str = "") -> ModelEntry:
    """A timm model by name, labelled like the torchvision ones: untrained unless ``weights`` are given or
    timm's pretrained weights are already in its cache. Preprocessing defaults to timm's pretrained config."""
    import timm
    from timm.data import resolve_data_config

    from models.preprocessing import resize_crop_normalise

    if not timm.is_model(timm_name):
        raise ValueError(f"timm has no model named {timm_name!r}")
    build_kwargs = dict(kwargs or {})

    def builder() -> nn.Module:
        return timm.create_model(timm_name, pretrained=False, **build_kwargs)

    cfg = resolve_data_config({}, pretrained_cfg=timm.models.get_pretrained_cfg(timm_name).to_dict()
                              if timm.models.get_pretrained_cfg(timm_name) is not None else {})
    _c, height, width = cfg["input_size"]
    num_classes = int(build_kwargs.get("num_classes", 1000))
    if categories is None:
        categories = imagenet_categories() if num_classes == 1000 else tuple(f"class {i}" for i in range(num_classes))
    if input_spec is None:
        input_spec = InputSpec(3, int(height), int(width))
    if make_preprocess is None:
        resize = int(input_spec.height / cfg.get("crop_pct", 1.0)) if cfg.get("crop_pct") else None
        mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
        interp = cfg.get("interpolation", "bilinear")
        interp = interp if interp in ("nearest", "bilinear", "bicubic", "lanczos") else "bilinear"
        spec = input_spec

        def make_preprocess() -> Preprocess:
            return resize_crop_normalise(spec.height, spec.width, resize=resize, mean=mean, std=std,
                                         interpolation=interp)
    if weights is None:
        weights = TimmCacheWeights(timm_name) if num_classes == 1000 and not build_kwargs else NoWeights(
            f"timm {timm_name} with custom arguments has no pretrained weights here; it runs untrained")
    return ModelEntry(
        id=model_id, title=title or timm_name, dataset="ImageNet-1k" if num_classes == 1000 else "custom",
        family="timm", input=input_spec, categories=categories, builder=builder, make_preprocess=make_preprocess,
        weights=weights, target_layer=target_layer, description=description or f"timm's {timm_name}.",
        meta={"timm_name": timm_name},
    )


def find_target_layer(model: nn.Module, input_spec: InputSpec) -> str:
    """Grad-CAM's default layer for a model that names none: the *block* that holds the last convolution
    whose output is still spatial (more than 1×1), in execution order.

    From that convolution the rule walks up its enclosing modules while their output keeps the
    convolution's own grid, and takes the outermost one: ResNet's ``layer4`` (the convolution plus the skip
    connection and ReLU the classifier reads, not ``layer4.1.conv2``, which sees the residual branch only),
    an Inception module's concatenation, MobileNet's conv-BN-activation unit. A convolution whose enclosing
    module changes the grid (VGG's ``features`` also pools) or that sits directly in the model
    (EfficientNet's ``conv_head``) is taken as it is; on EfficientNet-Lite0 with its ImageNet weights that
    layer puts the peak on the object in the offline photos (``tests/test_saliency_default_layer.py``),
    where the BN+ReLU6 after it (``bn2``) does not. Found with one forward pass of a zero image."""
    shapes: dict[str, tuple[int, ...]] = {}  # every module's output shape (its last call)
    convs: list[str] = []  # convolutions with a spatial output, in the order they ran
    handles = []

    def record(name: str, module: nn.Module, output: object) -> None:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else ()
        shapes[name] = shape
        if isinstance(module, nn.modules.conv._ConvNd) and len(shape) == 4 and shape[-1] * shape[-2] > 1:
            convs.append(name)

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(
                    lambda m, _i, out, name=name: record(name, m, out)))
        with torch.no_grad():
            model(torch.zeros(1, input_spec.channels, input_spec.height, input_spec.width))
    finally:
        for handle in handles:
            handle.remove()
    if not convs:
        raise ValueError("the model has no convolution with a spatial output; set target_layer explicitly")
    choice = convs[-1]
    grid = shapes[choice][-2:]
    parts = choice.split(".")
    for depth in range(len(parts) - 1, 0, -1):
        enclosing = ".".join(parts[:depth])
        shape = shapes.get(enclosing, ())
        if len(shape) != 4 or shape[-2:] != grid:
            break
        choice = enclosing
    return choice


class ModelRegistry:
    """An open table of models: :meth:`register` is the one way in, for every kind of model."""

    def __init__(self, entries: Iterable[ModelEntry] = ()) -> None:
        self._entries: dict[str, ModelEntry] = {}
        self._lock = threading.Lock()
        for entry in entries:
            self.register(entry)

    def register(self, entry: ModelEntry, *, replace: bool = False) -> ModelEntry:
        """Add ``entry`` (``replace=True`` to swap one with the same id). An entry without a
        ``target_layer`` gets the found one. Returns the entry as stored."""
        if not MODEL_ID.fullmatch(entry.id):
            raise ValueError(f"model id {entry.id!r} must match [a-z0-9._-]+")
        with self._lock:
            if entry.id in self._entries and not replace:
                raise ValueError(f"a model with id {entry.id!r} is already registered")
        if not entry.target_layer and not entry.problem:
            entry = dataclasses.replace(entry, target_layer=find_target_layer(entry.build_untrained(), entry.input))
        with self._lock:
            self._entries[entry.id] = entry
        return entry

    def unregister(self, model_id: str) -> None:
        with self._lock:
            self._entries.pop(model_id, None)

    def get(self, model_id: str) -> ModelEntry:
        """The entry for ``model_id``; ``KeyError`` when there is none."""
        with self._lock:
            return self._entries[model_id]

    def list(self) -> list[ModelEntry]:
        with self._lock:
            return list(self._entries.values())

    def __contains__(self, model_id: object) -> bool:
        with self._lock:
            return model_id in self._entries

    def copy(self) -> ModelRegistry:
        clone = ModelRegistry()
        with self._lock:
            clone._entries = dict(self._entries)
        return clone


def register_builtin_models(registry: ModelRegistry) -> ModelRegistry:
    """The models that come with ConvScope: bundled, EfficientNet-Lite0 and the torchvision classifiers."""
    for entry in _bundled_entries():
        registry.register(entry)
    registry.register(efficientnet_entry())
    for spec in TORCHVISION_MODELS:
        registry.register(_torchvision_entry(*spec))
    return registry


@lru_cache(maxsize=1)
def default_registry() -> ModelRegistry:
    """The process-wide registry, with the built-in models (made on first use, never at import)."""
    return register_builtin_models(ModelRegistry())


def register_model(entry: ModelEntry, *, replace: bool = False) -> ModelEntry:
    """Register ``entry`` in the process-wide registry (as torchvision's ``register_model``)."""
    return default_registry().register(entry, replace=replace)


def list_models() -> list[ModelEntry]:
    return default_registry().list()


def get_entry(model_id: str) -> ModelEntry:
    """The entry for ``model_id``; ``KeyError`` when there is none."""
    return default_registry().get(model_id)


def get_model(model_id: str, trained: bool = True) -> nn.Module:
    """The built model in eval mode (as torchvision's ``get_model``), trained weights loaded strictly."""
    return get_entry(model_id).build(trained)
