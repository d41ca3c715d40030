"""An imported model file (ONNX or Keras) as a PyTorch module, with its normalised graph cached on disk.

Route: ``.keras`` → Keras 3 (torch backend) exports ONNX → :func:`onnx_graph.normalise` → ``onnx2torch``;
``.onnx`` → :func:`onnx_graph.normalise` → ``onnx2torch``. Convolutions stay ``nn.Conv2d``, so hooks,
step-through and Grad-CAM see them; layer names are the converted module's ``named_modules()`` names and
the ONNX node names ride along as labels.

The normalised graph is written once per source file, by its sha256, as ``<sha256>.onnx`` plus
``<sha256>.json`` (image input, labels, source opset): a Keras export costs seconds, reading the cached
graph back a fraction of that. The same pair is what an upload's child process hands to the server.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from models.imported.normalise import normalise
from models.imported.onnx_graph import (
    GraphLimits,
    ImageInput,
    ModelFileRefused,
    NormalisedGraph,
    load_external_data,
    parse,
)

KINDS = ("onnx", "keras")
KERAS_INSTALL = 'pip install "convscope[keras]"'


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def normalised_graph(source: Path, kind: str, limits: GraphLimits, *, external_data: bool = True) -> NormalisedGraph:
    """Read ``source`` (an ``.onnx`` or ``.keras`` file) and normalise it; :class:`ModelFileRefused` with the
    cause otherwise. ``external_data=False``: a graph whose tensors live in other files is refused (uploads)."""
    if kind == "keras":
        from models.imported.keras_archive import export_onnx

        model = export_onnx(source, limits)
    else:
        size = source.stat().st_size
        if size > limits.max_tensor_bytes + 64 * 1024 * 1024:
            raise ModelFileRefused(f"The model file is {size / 2**20:,.0f} MB; at most "
                                   f"{limits.max_tensor_bytes / 2**20:,.0f} MB of tensors are read.",
                                   413, "model_too_large")
        model = parse(source.read_bytes(), limits)
        load_external_data(model, source.parent if external_data else None)
    return normalise(model)


def save_normalised(graph: NormalisedGraph, folder: Path, key: str) -> None:
    """Write ``<key>.onnx`` and ``<key>.json`` atomically (a reader never sees half a pair)."""
    folder.mkdir(parents=True, exist_ok=True)
    for suffix, write in ((".onnx", lambda p: onnx.save(graph.model, str(p))),
                          (".json", lambda p: p.write_text(json.dumps(_describe(graph))))):
        partial = folder / f"{key}{suffix}.partial-{os.getpid()}-{threading.get_ident()}"
        write(partial)
        os.replace(partial, folder / f"{key}{suffix}")


def _describe(graph: NormalisedGraph) -> dict[str, Any]:
    image = graph.image
    return {"image": [image.channels, image.height, image.width, image.channels_last], "labels": graph.labels,
            "source_opset": graph.source_opset, "metadata": graph.metadata}


def load_normalised(folder: Path, key: str) -> NormalisedGraph | None:
    """The pair :func:`save_normalised` wrote, or None when it is not (all) there."""
    try:
        description = json.loads((folder / f"{key}.json").read_text())
        model = onnx.load(str(folder / f"{key}.onnx"))
    except (OSError, ValueError, onnx.onnx_cpp2py_export.checker.ValidationError):
        return None
    channels, height, width, channels_last = description["image"]
    return NormalisedGraph(model, ImageInput(channels, height, width, channels_last), description["labels"],
                           description["source_opset"], description.get("metadata", {}))


def cached_graph(source: Path, kind: str, cache_dir: Path, limits: GraphLimits) -> tuple[NormalisedGraph, str]:
    """The normalised graph of ``source``, converted once per content (sha256) and kept in ``cache_dir``."""
    key = sha256_of(source)
    graph = load_normalised(cache_dir, key)
    if graph is None:
        graph = normalised_graph(source, kind, limits)
        save_normalised(graph, cache_dir, key)
    return graph, key


def to_module(graph: NormalisedGraph) -> nn.Module:
    """``onnx2torch``'s module for a normalised graph (every converter was checked to exist beforehand)."""
    from onnx2torch import convert

    try:
        module = convert(graph.model)
    except Exception as exc:  # a converter that exists but refuses this node's attributes
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileRefused(f"onnx2torch could not convert the graph ({text}).") from None
    return module.eval()


def check_batches(module: nn.Module, image: ImageInput) -> None:
    """The module runs, and a batch of two gives what two batches of one give (ConvScope batches images)."""
    if not (image.channels and image.height and image.width):
        return  # the entry gives the size; the registry's first run checks that it runs
    x = torch.randn(2, image.channels, image.height, image.width, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            both = module(x)
            one_by_one = torch.cat([module(x[:1]), module(x[1:])])
    except Exception as exc:
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ModelFileRefused(f"The converted model does not run on a batch of images ({text}); the graph "
                               "may fix its batch size to 1 in a way ConvScope cannot undo.") from None
    if not isinstance(both, torch.Tensor) or both.dim() != 2:
        raise ModelFileRefused(f"The model's output has shape {tuple(getattr(both, 'shape', ()))}; ConvScope "
                               "shows classifiers (batch × classes).")
    scale = float(one_by_one.abs().max()) or 1.0
    if float((both - one_by_one).abs().max()) > 1e-4 * max(scale, 1.0):
        raise ModelFileRefused("The converted model gives other answers for a batch than for the same images "
                               "one by one: the graph fixes its batch size to 1 in a way ConvScope cannot undo.")


@dataclass
class ImportedModel:
    """One converted model: a template module (its weights are the file's), handed out as copies."""

    module: nn.Module
    graph_labels: dict[str, str]
    image: ImageInput
    sha256: str
    source: str

    @classmethod
    def from_graph(cls, graph: NormalisedGraph, sha256: str, source: str) -> ImportedModel:
        module = to_module(graph)
        check_batches(module, graph.image)
        return cls(module, dict(graph.labels), graph.image, sha256, source)

    def trained(self) -> nn.Module:
        return copy.deepcopy(self.module)

    def untrained(self) -> nn.Module:
        """The same graph with every layer that has parameters re-initialised (the caller seeds the RNG)."""
        model = copy.deepcopy(self.module)
        for module in model.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset) and module is not model:
                reset()
        return model

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    @property
    def nbytes(self) -> int:
        tensors = [*self.module.parameters(), *self.module.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors)


@dataclass(frozen=True)
class ImportedWeights:
    """The weights an ONNX or Keras file carries: always ``local`` once the file converted."""

    model: ImportedModel

    def status(self):  # noqa: ANN201 - WeightsStatus (imported lazily: models.registry imports this package)
        from models.weight_sources import WeightsStatus

        return WeightsStatus("local", f"the weights in {self.model.source} (sha256 {self.model.sha256[:12]}…)")

    def load_state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def metrics(self) -> dict[str, Any] | None:
        return None


def keras_available() -> bool:
    """Whether Keras 3 imports here on its torch backend (the only one ConvScope converts with)."""
    from models.imported.keras_archive import keras_module

    try:
        keras_module()
    except ModelFileRefused:
        return False
    return True
