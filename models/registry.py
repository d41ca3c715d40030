"""The model registry, in the spirit of torchvision's ``models/_api.py``.

Each :class:`ModelEntry` holds a builder (architecture with random, seeded initialisation), a weights
source that knows where trained weights come from and what state they are in, the class labels, the
input size and a preprocessing *constructor*. ``list_models()`` / ``get_entry(id)`` are the lookup.
Nothing here touches the network: a download happens only when a user asks for one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import torch
from torch import nn

from models import architectures
from models.datasets import shapes
from models.preprocessing import Preprocess, mnist_style, rgb_square, torchvision_transforms

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
UNTRAINED_SEED = 0

ProgressCallback = Callable[[int, int | None], None]


@dataclass(frozen=True)
class InputSpec:
    channels: int
    height: int
    width: int


@dataclass(frozen=True)
class WeightsStatus:
    """``state`` is one of bundled | cached | downloadable | untrained | unavailable."""

    state: str
    detail: str

    @property
    def loadable(self) -> bool:
        return self.state in ("bundled", "cached")


class WeightsSource(Protocol):
    def status(self) -> WeightsStatus: ...

    def load_state_dict(self) -> dict[str, torch.Tensor]: ...

    def metrics(self) -> dict[str, Any] | None: ...


class WeightsError(RuntimeError):
    """Trained weights could not be loaded; the message is a sentence for a person."""


@dataclass(frozen=True)
class BundledWeights:
    """Weights trained by our own scripts and committed next to their metrics file."""

    path: Path
    metrics_path: Path

    def status(self) -> WeightsStatus:
        if not self.path.is_file():
            return WeightsStatus("unavailable", f"{self.path.name} is missing; run `convscope train` to make it")
        problem = _unreadable_reason(self.path)
        if problem is not None:
            return WeightsStatus("unavailable", f"{self.path.name} could not be read ({problem}); "
                                 "run `convscope train` to make it again")
        metrics = self.metrics() or {}
        acc = metrics.get("test_accuracy")
        detail = "trained by ConvScope's own training script"
        if metrics.get("train_source"):
            detail += f" on {metrics['train_source']}"
        if isinstance(acc, (int, float)):
            detail += f"; {acc * 100:.2f}% accuracy on {metrics.get('test_set', 'held-out data')}"
        return WeightsStatus("bundled", detail)

    def load_state_dict(self) -> dict[str, torch.Tensor]:
        try:
            return torch.load(self.path, map_location="cpu", weights_only=True)
        except FileNotFoundError as exc:
            raise WeightsError(f"{self.path.name} is missing") from exc
        except Exception as exc:  # a corrupt or foreign file: say so, never crash the server
            raise WeightsError(f"{self.path.name} could not be read: {exc}") from exc

    def metrics(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.metrics_path.read_text())
        except (OSError, ValueError):
            return None


def _unreadable_reason(path: Path) -> str | None:
    """Why the weights file at ``path`` cannot be read, or None; checked once per version of the file."""
    try:
        stat = path.stat()
    except OSError as exc:
        return str(exc)
    return _check_readable(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=64)
def _check_readable(path: str, _mtime_ns: int, _size: int) -> str | None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, or not a tensor file at all
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return "it holds no state dict of tensors"
    return None


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")


@dataclass(frozen=True)
class HubWeights:
    """torchvision weights in the torch hub cache, where torchvision itself looks for them.

    The file name carries the first hex digits of the file's sha256 (torchvision's convention); the
    check runs on download and on every load, so a truncated or corrupt file is reported, not used.
    """

    url: str

    @property
    def filename(self) -> str:
        return os.path.basename(urlparse(self.url).path)

    @property
    def cached_path(self) -> Path:
        return hub_checkpoint_dir() / self.filename

    @property
    def hash_prefix(self) -> str | None:
        match = _HASH_IN_NAME.search(self.filename)
        return match.group(1) if match else None

    def status(self) -> WeightsStatus:
        if self.cached_path.is_file():
            return WeightsStatus("cached", f"trained ImageNet weights in the torch hub cache ({self.filename})")
        return WeightsStatus(
            "downloadable",
            f"trained weights ({self.filename}) are not in the torch hub cache; until they are downloaded "
            "the model runs with untrained (random) weights",
        )

    def verify(self, path: Path) -> None:
        prefix = self.hash_prefix
        if prefix is None:
            return
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        if not digest.hexdigest().startswith(prefix):
            raise WeightsError(
                f"{path.name} fails its hash check (sha256 starts {digest.hexdigest()[:8]}, expected {prefix}): "
                "the file is corrupt or truncated; delete it and download again"
            )

    def load_state_dict(self) -> dict[str, torch.Tensor]:
        path = self.cached_path
        if not path.is_file():
            raise WeightsError(f"{self.filename} is not in the torch hub cache ({path.parent})")
        self.verify(path)
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise WeightsError(f"{self.filename} could not be read: {exc}") from exc

    def download(self, progress: ProgressCallback | None = None, timeout: float = 30.0) -> Path:
        """Download into the hub cache with a hash check; the file appears only once verified."""
        dest = self.cached_path
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=self.filename + ".", suffix=".partial", dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(self.url, timeout=timeout) as response:
                total = response.headers.get("Content-Length")
                total_bytes = int(total) if total and total.isdigit() else None
                done = 0
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total_bytes)
            self.verify(tmp)
            os.replace(tmp, dest)
            return dest
        except WeightsError:
            raise
        except Exception as exc:
            raise WeightsError(f"downloading {self.filename} failed: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def metrics(self) -> dict[str, Any] | None:
        return None


@dataclass(frozen=True)
class ModelEntry:
    id: str
    title: str
    dataset: str
    family: str  # "bundled" | "torchvision"
    input: InputSpec
    categories: tuple[str, ...]
    builder: Callable[[], nn.Module]
    make_preprocess: Callable[[], Preprocess]
    weights: WeightsSource
    target_layer: str  # the last convolutional block: Grad-CAM's default layer
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

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
def _registry() -> dict[str, ModelEntry]:
    entries = _bundled_entries() + [_torchvision_entry(*spec) for spec in TORCHVISION_MODELS]
    return {entry.id: entry for entry in entries}


def list_models() -> list[ModelEntry]:
    return list(_registry().values())


def get_entry(model_id: str) -> ModelEntry:
    """The entry for ``model_id``; ``KeyError`` when there is none."""
    return _registry()[model_id]
