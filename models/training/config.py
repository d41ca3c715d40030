"""What one training run is: architecture, data and the course's knobs, with their bounds.

One :class:`RunConfig` drives every training in ConvScope: ``convscope train`` (the bundled recipes below
are configs like any other) and the Train view's runs (``server.services.training``) call the same
:class:`models.training.loop.Trainer` with it. The bounds here are the ones the API's schema states.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Any

ARCHITECTURES = ("lenet5", "mnist-shallow", "mnist-deep", "tinyvgg-shapes")
DATASETS = ("mnist", "fashion-mnist", "shapes")
FOLDER_PREFIX = "folder:"  # a named image folder (``folder:NAME``), as the dataset examples name it
FOLDER_DATASET = re.compile(r"folder:[A-Za-z0-9][A-Za-z0-9_-]{0,39}")
# Any other architecture is a models-file model, named by its registry id (resolved by models.training.plan)
MODEL_ID = re.compile(r"[a-z0-9._-]{1,80}")
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "onecycle")
AUGMENTATIONS = ("shift", "flip", "rotate", "scale")
INITS = ("random", "current")  # current: fine-tune from the bundled model's trained weights
# What augment=true means for each dataset: flips only where a mirrored image is still of its class
# (clothes; Shapes, whose grating labels are remapped to the new stripe angle), never for digits.
DEFAULT_AUGMENT = {
    "mnist": ("shift", "rotate", "scale"),
    "fashion-mnist": ("shift", "flip", "scale"),
    "shapes": ("flip",),
}
FOLDER_AUGMENT = ("shift", "scale")  # a user's folder: flips are offered, not assumed (a mirrored "b" is a "d")
FLIP_MAKES_SENSE = ("fashion-mnist", "shapes")
# The networks whose first layer reads 28×28 greyscale (MNIST, Fashion-MNIST); TinyVGG adapts to either.
GREYSCALE_ONLY = ("lenet5", "mnist-shallow", "mnist-deep")

# Bounds (the API schema states the same; server.services.training.schema)
MAX_EPOCHS = 50
MIN_BATCH, MAX_BATCH = 1, 512
MIN_LR, MAX_LR = 1e-6, 1.0
MAX_WEIGHT_DECAY = 0.1
MAX_DROPOUT = 0.9
MIN_TRAIN_SIZE, MAX_TRAIN_SIZE = 10, 60_000
MAX_SEED = 2**31 - 1
MAX_CHECKPOINT_EVERY = 100_000


class ConfigError(ValueError):
    """A knob is out of range or does not fit the others; ``knob`` names it."""

    def __init__(self, knob: str, message: str) -> None:
        super().__init__(message)
        self.knob = knob
        self.message = message


@dataclass(frozen=True)
class RunConfig:
    architecture: str = "lenet5"
    dataset: str = "mnist"
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 3e-3  # the one-cycle schedule's peak; the constant rate otherwise
    schedule: str = "onecycle"
    weight_decay: float = 1e-4
    dropout: float = 0.0
    batch_norm: bool = False
    augment: tuple[str, ...] = ("shift", "rotate", "scale")
    train_size: int | None = None  # None: every training image the dataset has here
    seed: int = 0
    checkpoint_every_steps: int = 0  # 0: a checkpoint at each epoch's end only
    init: str = "random"  # "current": start from the model's trained weights (fine-tuning)
    # He-normal re-initialisation, which TinyVGG (four ReLU convolutions, no normalisation) needs: with the
    # default init its logits start almost constant and training stalls for epochs.
    kaiming_init: bool = False
    channels_last: bool = False  # faster CPU convolutions for the RGB net (same numbers, other layout)
    select_best: bool = False  # keep the epoch with the best validation accuracy (Shapes has a val split)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["augment"] = list(self.augment)
        return out


def checked(config: RunConfig) -> RunConfig:
    """``config`` when every knob is in range and the knobs fit each other; :class:`ConfigError` otherwise."""
    if config.architecture not in ARCHITECTURES and not MODEL_ID.fullmatch(config.architecture):
        _choice("architecture", config.architecture, ARCHITECTURES)
    if not is_folder(config.dataset):
        _choice("dataset", config.dataset, DATASETS, " or folder:NAME (a named image folder)")
    _choice("optimizer", config.optimizer, OPTIMIZERS)
    _choice("schedule", config.schedule, SCHEDULES)
    _range("epochs", config.epochs, 1, MAX_EPOCHS)
    _range("batch_size", config.batch_size, MIN_BATCH, MAX_BATCH)
    _range("lr", config.lr, MIN_LR, MAX_LR)
    _range("weight_decay", config.weight_decay, 0.0, MAX_WEIGHT_DECAY)
    _range("dropout", config.dropout, 0.0, MAX_DROPOUT)
    _range("seed", config.seed, 0, MAX_SEED)
    _range("checkpoint_every_steps", config.checkpoint_every_steps, 0, MAX_CHECKPOINT_EVERY)
    if config.train_size is not None:
        _range("train_size", config.train_size, MIN_TRAIN_SIZE, MAX_TRAIN_SIZE)
    if config.architecture in GREYSCALE_ONLY and config.dataset == "shapes":
        raise ConfigError("dataset", f"dataset: {config.architecture} reads 28×28 greyscale images; Shapes are "
                          "64×64 colour (train tinyvgg-shapes on them)")
    _check_init(config)
    for kind in config.augment:
        _choice("augment", kind, AUGMENTATIONS)
    if "flip" in config.augment and config.dataset not in FLIP_MAKES_SENSE and not is_folder(config.dataset):
        raise ConfigError("augment", f"augment: flip does not make sense for {config.dataset} (a mirrored digit is "
                          "not the same digit); use shift, rotate or scale")
    if config.dataset == "shapes" and set(config.augment) - {"flip"}:
        raise ConfigError("augment", "augment: Shapes images take flip only (the 8 symmetries of the square); "
                          "shifts would push shapes out of their known boxes")
    return config


def is_folder(dataset: str) -> bool:
    """``dataset`` names an image folder (``folder:NAME``)."""
    return bool(FOLDER_DATASET.fullmatch(dataset))


def is_bundled(architecture: str) -> bool:
    """One of ConvScope's own architectures (else a models-file model)."""
    return architecture in ARCHITECTURES


def _check_init(config: RunConfig) -> None:
    _choice("init", config.init, INITS)
    if config.init != "current" or not is_bundled(config.architecture):
        return  # a models-file model's own weights are checked where it is resolved (models.training.plan)
    native = ("shapes",) if config.architecture == "tinyvgg-shapes" else ("mnist", "fashion-mnist")
    if config.dataset not in native:
        raise ConfigError("init", f"init: {config.architecture}'s current weights read {' or '.join(native)} images, "
                          f"not {config.dataset}; start from random weights instead")
    if config.batch_norm or (config.dropout and config.architecture in ("lenet5", "tinyvgg-shapes")):
        raise ConfigError("init", f"init: {config.architecture}'s current weights have no batch norm"
                          f"{' or dropout' if config.architecture != 'mnist-shallow' else ''} layers; turn them off "
                          "to fine-tune, or start from random weights")


def _choice(knob: str, value: str, choices: tuple[str, ...], more: str = "") -> None:
    if value not in choices:
        raise ConfigError(knob, f"{knob}: {value!r} is not one of {', '.join(choices)}{more}")


def _range(knob: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(knob, f"{knob}: {value} is out of range ({low:g} to {high:g})")


# The recipes the bundled weights were made with (convscope train ID): AdamW, one-cycle, augmentation.
BUNDLED_RECIPES: dict[str, RunConfig] = {
    "lenet5": RunConfig("lenet5", "mnist", epochs=10, batch_size=64, lr=3e-3, weight_decay=1e-4),
    "mnist-shallow": RunConfig("mnist-shallow", "mnist", epochs=10, batch_size=64, lr=2e-3, weight_decay=1e-4),
    "mnist-deep": RunConfig("mnist-deep", "mnist", epochs=8, batch_size=64, lr=2e-3, weight_decay=1e-4),
    "tinyvgg-shapes": RunConfig("tinyvgg-shapes", "shapes", epochs=20, batch_size=32, lr=2e-3, weight_decay=1e-4,
                                augment=("flip",), kaiming_init=True, channels_last=True, select_best=True),
}


def recipe(model_id: str, **changes: Any) -> RunConfig:
    """The bundled recipe for ``model_id`` with ``changes`` applied (KeyError when there is none)."""
    if model_id not in BUNDLED_RECIPES:
        raise KeyError(f"no training recipe for {model_id!r}; trainable: {', '.join(BUNDLED_RECIPES)}")
    return replace(BUNDLED_RECIPES[model_id], **changes)


def for_architecture(architecture: str, **changes: Any) -> RunConfig:
    """A run of ``architecture``: its bundled recipe's defaults (data, init, layout), then ``changes``;
    ``augment=True`` means the dataset's default augmentations, ``False`` none."""
    base = BUNDLED_RECIPES.get(architecture, RunConfig(architecture=architecture))
    augment = changes.pop("augment", None)
    config = replace(base, **changes)
    default = FOLDER_AUGMENT if is_folder(config.dataset) else DEFAULT_AUGMENT.get(config.dataset, ())
    if augment is True:
        augment = default
    elif augment is False:
        augment = ()
    elif augment is None:
        augment = default if config.dataset != base.dataset else base.augment
    return replace(config, augment=tuple(dict.fromkeys(augment)))
