"""What a :class:`RunConfig` means here: its network (a bundled architecture, or a models-file model), the input
that network reads, the classes and the normalisation, found through :class:`Sources` (the data directory, the
named image folders, the models file and the bounds of one run). The server checks a run with :func:`plan`
before it starts a process; the worker process and ``convscope train`` make the same plan and train it.

A models-file model (``architecture`` = its id, family ``file``) trains when its input is at most 64×64 and
its parameters and forward FLOPs are within the sources' budgets (else :class:`ConfigError` naming
``architecture``). From ``init="random"`` every module's ``reset_parameters`` is called, seeded; from
``"current"`` it starts from the models file's weights. When its output count is not the dataset's class
count, its last ``nn.Linear`` is replaced by a new one with one output per class (seeded), the usual way to
fine-tune a network on new classes; a model whose output does not come from a Linear layer is refused,
naming ``architecture``. On MNIST, Fashion-MNIST or Shapes its input must be theirs, and it reads them as the
bundled models do (their normalisation); on an image folder, the images are fitted to its input and
normalised with its own mean/std.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.preprocessing import MNIST_MEAN, MNIST_STD, SHAPES_MEAN, SHAPES_STD, Preprocess, mnist_style, rgb_square
from models.training import data as datasets
from models.training import folders
from models.training.config import FOLDER_PREFIX, ConfigError, RunConfig, checked, is_bundled, is_folder
from models.training.networks import INPUTS, TITLES, build_network, file_network, first_conv, network_cost

MAX_FILE_MODEL_SIDE = 64  # a models-file model trains here when its input is at most 64×64
DATASET_MEAN_STD = {1: (MNIST_MEAN, MNIST_STD), 3: (SHAPES_MEAN, SHAPES_STD)}  # MNIST-like, Shapes
BUNDLED_INPUTS = {"lenet5": (1, 28, 28), "mnist-shallow": (1, 28, 28), "mnist-deep": (1, 28, 28),
                  "tinyvgg-shapes": (3, 64, 64)}


@dataclass(frozen=True)
class Sources:
    """Where a run's named things are found, and what one run may read and train."""

    data_dir: Path | None = None
    image_folders: Mapping[str, Path] = field(default_factory=dict)
    models_file: Path | None = None
    folder_max_images: int = 2_000  # images read from a folder per run (an even thinning beyond)
    folder_max_bytes: int = 200 * 2**20  # bytes of image files read from a folder per run
    folder_max_listed: int = 5_000  # files listed (as the dataset examples list them)
    max_pixels: int = 50_000_000
    max_parameters: int = 5_000_000  # a models-file model with more is refused (architecture)
    max_flops: int = 200_000_000  # forward FLOPs of one image; more is refused (architecture)

    def as_json(self) -> dict[str, Any]:
        return {"data_dir": str(self.data_dir) if self.data_dir else None,
                "image_folders": {k: str(v) for k, v in self.image_folders.items()},
                "models_file": str(self.models_file) if self.models_file else None,
                **{k: getattr(self, k) for k in ("folder_max_images", "folder_max_bytes", "folder_max_listed",
                                                 "max_pixels", "max_parameters", "max_flops")}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Sources:
        return cls(**{**data, "data_dir": Path(data["data_dir"]) if data.get("data_dir") else None,
                      "image_folders": {k: Path(v) for k, v in data.get("image_folders", {}).items()},
                      "models_file": Path(data["models_file"]) if data.get("models_file") else None})


@dataclass(frozen=True)
class Plan:
    config: RunConfig
    title: str  # the architecture's name for people
    input: tuple[int, int, int]  # C, H, W the network reads
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    make_preprocess: Callable[[], Preprocess]  # what the run's model reads in every view
    network: Callable[[], nn.Module]  # the run's starting network (seeded: the same on every call)
    architecture: Callable[[], nn.Module]  # the same module tree, its weights not set (for the run's model)
    folder: Any = None  # the listed image folder (folder:NAME datasets)
    parameters: int = 0

    @property
    def weights_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.architecture().state_dict().values())

    def load_data(self, sources: Sources, download: bool = False) -> datasets.TrainingData:
        """The training and held-out images, in the network's input."""
        config = self.config
        if self.folder is None:
            return datasets.load(config.dataset, sources.data_dir, config.train_size, download)
        listed = self.folder
        chosen = folders.picks(listed, sources.folder_max_images, sources.folder_max_bytes)
        labels = np.asarray(listed.labels, dtype=np.int64)[chosen]
        train, held = folders.split(labels, config.seed)
        if config.train_size is not None:
            train = train[: config.train_size]
        mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)
        train_x, train_read = folders.read_images(listed, chosen[train], self.input)
        test_x, test_read = folders.read_images(listed, chosen[held], self.input)
        train, held = train[train_read], held[test_read]
        broken = int((~train_read).sum() + (~test_read).sum())
        name = config.dataset
        return datasets.TrainingData(
            name, self.classes, train_x, torch.from_numpy(labels[train]), test_x, torch.from_numpy(labels[held]),
            None, None, mean, std,  # type: ignore[arg-type]  (per channel)
            f"{name}: {len(train):,} of its {len(listed):,} images ({len(chosen):,} chosen"
            f"{f', {broken} unreadable left out' if broken else ''})",
            f"{len(held):,} images of {name} held out (1 in {folders.HELD_OUT_FRACTION} of each class, chosen by "
            f"seed {config.seed}; never used in training)")


def plan(config: RunConfig, sources: Sources, registry: Any = None, check_files: bool = True) -> Plan:
    """The run ``config`` describes, checked: :class:`ConfigError` naming the knob when it cannot be trained
    here. ``registry`` holds the models-file models (the server's); None: read ``sources.models_file``.
    ``check_files=False``: MNIST's files may come later (``convscope train --download``)."""
    checked(config)
    listed = None
    if is_folder(config.dataset):
        name = config.dataset[len(FOLDER_PREFIX):]
        path = sources.image_folders.get(name)
        if path is None:
            known = ", ".join(f"folder:{n}" for n in sources.image_folders) or "none"
            raise ConfigError("dataset", f"dataset: there is no image folder named {name!r} here (known: {known})")
        listed = folders.listing(name, path, sources.folder_max_listed, sources.max_pixels)
        classes = listed.classes
    else:
        reason = datasets.missing(config.dataset, sources.data_dir) if check_files else None
        if reason is not None:
            raise ConfigError("dataset", f"dataset: {config.dataset} cannot be trained here: {reason}")
        classes = datasets.CLASSES[config.dataset]
    if is_bundled(config.architecture):
        return _bundled_plan(config, classes, listed)
    return _file_plan(config, classes, listed, sources, registry)


def _bundled_plan(config: RunConfig, classes: tuple[str, ...], listed: Any) -> Plan:
    shape = BUNDLED_INPUTS[config.architecture] if listed is not None else INPUTS[config.dataset]
    title = TITLES[config.architecture]
    if listed is None:
        return Plan(config, title, shape, classes, *_dataset_preprocessing(shape), lambda: build_network(config),
                    lambda: build_network(config))
    means, stds = (folders.FOLDER_MEAN,) * shape[0], (folders.FOLDER_STD,) * shape[0]
    network = lambda: build_network(config, len(classes), shape)  # noqa: E731
    return Plan(config, title, shape, classes, means, stds, lambda: folders.preprocess(*shape, means, stds), network,
                network, folder=listed)


def _file_plan(config: RunConfig, classes: tuple[str, ...], listed: Any, sources: Sources, registry: Any) -> Plan:
    entry = _file_entry(config.architecture, sources, registry)
    spec = entry.input
    shape = (spec.channels, spec.height, spec.width)
    if max(spec.height, spec.width) > MAX_FILE_MODEL_SIDE:
        raise ConfigError("architecture", f"architecture: {entry.id} reads {spec.height}×{spec.width} images; "
                          f"training here takes models-file models whose input is at most {MAX_FILE_MODEL_SIDE}×"
                          f"{MAX_FILE_MODEL_SIDE}")
    if listed is None and shape != INPUTS[config.dataset]:
        c, h, w = INPUTS[config.dataset]
        raise ConfigError("dataset", f"dataset: {entry.id} reads {shape[0]}×{spec.height}×{spec.width} images and "
                          f"{config.dataset} is {c}×{h}×{w}; train it on a folder:NAME dataset (resized to its input)")
    if config.batch_norm or config.dropout:
        knob = "batch_norm" if config.batch_norm else "dropout"
        raise ConfigError(knob, f"{knob}: {entry.id} is your own architecture, trained as it is: turn {knob} off")
    state = None
    if config.init == "current":
        try:
            state = entry.weights.load_state_dict()
        except Exception as exc:  # noqa: BLE001 (no weights file, a missing download: say so, naming init)
            raise ConfigError("init", f"init: {entry.id}'s current weights cannot be loaded ({exc}); start from "
                              "random weights") from None
    try:
        parameters, flops = network_cost(entry.builder, shape)
    except ValueError as exc:
        raise ConfigError("architecture", f"architecture: {entry.id}: {exc}") from None
    if parameters > sources.max_parameters or flops > sources.max_flops:
        raise ConfigError("architecture", f"architecture: {entry.id} has {parameters:,} parameters and "
                          f"{flops / 1e6:,.1f} MFLOPs per image; training here takes at most "
                          f"{sources.max_parameters:,} and {sources.max_flops / 1e6:,.0f} MFLOPs")

    def network() -> nn.Module:
        return file_network(entry.builder, config.seed, len(classes), shape, state)

    def architecture() -> nn.Module:
        return file_network(entry.builder, config.seed, len(classes), shape, None)

    try:
        first_conv(network())  # the Train view shows its first convolution's filters
    except ValueError as exc:
        raise ConfigError("architecture", f"architecture: {entry.id}: {exc}") from None
    if listed is None:
        preprocessing = _dataset_preprocessing(shape)
    else:  # its own normalisation (what its current weights expect when fine-tuned)
        own = entry.make_preprocess()
        means, stds = _per_channel(own.mean, shape[0]), _per_channel(own.std, shape[0])
        preprocessing = (means, stds, lambda: folders.preprocess(*shape, means, stds))
    return Plan(config, entry.title, shape, classes, *preprocessing, network, architecture, folder=listed,
                parameters=parameters)


def _dataset_preprocessing(shape: tuple[int, int, int]) -> tuple[tuple[float, ...], tuple[float, ...],
                                                                  Callable[[], Preprocess]]:
    """MNIST, Fashion-MNIST and Shapes as the bundled models read them: mean, std and the preprocessing."""
    mean, std = DATASET_MEAN_STD[shape[0]]
    make: Callable[[], Preprocess] = mnist_style if shape[0] == 1 else (lambda: rgb_square(shape[1]))
    return (mean,) * shape[0], (std,) * shape[0], make


def _per_channel(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    return values * channels if len(values) == 1 else values


def _file_entry(model_id: str, sources: Sources, registry: Any) -> Any:
    if registry is None:
        from models.models_file import load_models_file  # deferred: it imports the converters
        from models.registry import ModelRegistry

        registry = ModelRegistry()
        if sources.models_file is not None:
            load_models_file(sources.models_file, registry)
    if model_id not in registry:
        raise ConfigError("architecture", f"architecture: {model_id!r} is neither lenet5, mnist-shallow, mnist-deep, "
                          "tinyvgg-shapes nor a model of this server's models file")
    entry = registry.get(model_id)
    if entry.family != "file":
        raise ConfigError("architecture", f"architecture: {model_id} is a {entry.family} model; training takes the "
                          "bundled architectures and models-file models")
    if entry.problem:
        raise ConfigError("architecture", f"architecture: {model_id} cannot be built ({entry.problem})")
    return entry


def file_model_cost(entry: Any, shape: tuple[int, int, int]) -> tuple[int, int]:
    """(parameters, FLOPs of one image) of a models-file entry's network (builds it and runs it once)."""
    return network_cost(entry.builder, shape)


def choices(sources: Sources, registry: Any,
            cost: Callable[[Any, tuple[int, int, int]], tuple[int, int]] = file_model_cost
            ) -> dict[str, list[dict[str, Any]]]:
    """What a run can be made of here, for the Train view's menus: the architectures (the bundled ones, and the
    models-file models in ``registry`` that fit: input at most 64×64, within the budgets) and the datasets (the
    built-in ones whose files are here, and every named image folder: ``GET /api/image-folders`` has their
    classes). Nothing is trained or read but the models' one forward pass each (counting FLOPs), through ``cost``
    (a server keeps its answers: the list is asked for on every visit to the Train view)."""
    architectures = [{"id": name, "title": TITLES[name], "family": "bundled", "input": list(BUNDLED_INPUTS[name])}
                     for name in TITLES]
    for entry in registry.list():
        spec = entry.input
        if entry.family != "file" or entry.problem or max(spec.height, spec.width) > MAX_FILE_MODEL_SIDE:
            continue
        try:
            parameters, flops = cost(entry, (spec.channels, spec.height, spec.width))
        except ValueError:
            continue
        if parameters <= sources.max_parameters and flops <= sources.max_flops:
            architectures.append({"id": entry.id, "title": entry.title, "family": "file",
                                  "input": [spec.channels, spec.height, spec.width]})
    names = [d for d in datasets.TITLES if datasets.missing(d, sources.data_dir) is None]
    return {"architectures": architectures,
            "datasets": [{"id": d, "title": datasets.TITLES[d]} for d in names]
                        + [{"id": f"{FOLDER_PREFIX}{n}", "title": n} for n in sources.image_folders]}
