"""The user's own models, from a TOML models file (``--models-file PATH`` or ``CONVSCOPE_MODELS_FILE``).

One ``[[model]]`` table per model::

    [[model]]
    id = "my-resnet"                  # [a-z0-9._-]+, unique across the registry
    title = "ResNet-18 fine-tuned on my 5 classes"
    torchvision = "resnet18"          # exactly one of torchvision / timm / factory = "package.module:function"
                                      # / onnx = "model.onnx" / keras = "model.keras" (see models.imported)
    kwargs = { num_classes = 5 }      # optional, passed to the builder
    weights = "resnet18-5cls.pt"      # a state_dict (weights_only=True), relative to this file
    labels = ["cat", "dog", "fox", "owl", "eel"]   # or a file with one label per line
    input = { channels = 3, height = 224, width = 224 }
    resize = 256                      # optional: shorter side before the centre crop (default: no crop)
    mean = [0.485, 0.456, 0.406]      # optional, default 0 / 1
    std = [0.229, 0.224, 0.225]
    grayscale = false                 # optional: convert uploads to one channel
    target_layer = "layer4"           # optional: Grad-CAM's default layer (default: found automatically)
    examples = "folder:pets"          # optional: where "what does this channel look for?" searches by default
                                      # (a folder named with --image-folder pets=PATH; or mnist, shapes, photos)

Mistakes in the file itself — TOML that does not parse, an unknown field, a wrong type, two builders, a
bad or duplicate id — stop start-up with :class:`ModelsFileError` naming the file, the entry and the
field. Problems of one entry's *contents* — a weights file that is missing, does not fit, is TorchScript
or a whole pickled module; a builder that does not exist or fails — never stop anything: that entry is
listed with weights state ``unavailable`` and a sentence naming it and the cause, the others work.
The models file's folder is put on the Python path (last), so a factory module can sit beside it.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from models.imported.convert import (
    KERAS_INSTALL,
    ImportedModel,
    ImportedWeights,
    cached_graph,
    keras_available,
    normalised_graph,
    sha256_of,
)
from models.imported.onnx_graph import GraphLimits, ModelFileRefused
from models.preprocessing import Preprocess, resize_crop_normalise, torchvision_transforms
from models.registry import (
    MODEL_ID,
    InputSpec,
    ModelEntry,
    ModelRegistry,
    default_registry,
    imagenet_categories,
    timm_entry,
)
from models.weight_sources import HubWeights, LocalWeights, NoWeights, WeightsSource

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

log = logging.getLogger("convscope")

BUILDERS = ("torchvision", "timm", "factory", "onnx", "keras")
FIELDS = {"id", "title", *BUILDERS, "kwargs", "weights", "labels", "input", "resize", "mean", "std", "grayscale",
          "target_layer", "examples"}
INPUT_FIELDS = ("channels", "height", "width")
EXAMPLES = re.compile(r"mnist|shapes|photos|folder:[A-Za-z0-9][A-Za-z0-9_-]{0,39}")


class ModelsFileError(ValueError):
    """The models file cannot be used at all; the message names the file, the entry and the field."""


def default_import_cache() -> Path:
    """Where converted ONNX/Keras graphs are kept by default (the user's cache folder)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "convscope" / "imported"


def app_registry(models_file: Path | None, import_cache: Path | None = None) -> ModelRegistry:
    """The registry an app serves: the built-in models, plus the models file's when one is given."""
    registry = default_registry().copy()  # an app's own table: models uploaded to it stay in it
    if models_file is None:
        return registry
    load_models_file(models_file, registry, import_cache)
    return registry


def load_models_file(path: Path, registry: ModelRegistry, import_cache: Path | None = None) -> list[ModelEntry]:
    """Parse ``path`` and register each entry in ``registry``; returns the registered entries. Keras models
    are converted once per file content and kept in ``import_cache`` (default :func:`default_import_cache`)."""
    path = Path(path).expanduser().resolve()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelsFileError(f"models file {path} cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ModelsFileError(f"models file {path} is not valid TOML: {exc}") from None
    unknown_top = [k for k in document if k != "model"]
    if unknown_top:
        raise ModelsFileError(f"models file {path}: unknown top-level key {unknown_top[0]!r}; "
                              "each model is a [[model]] table")
    tables = document.get("model", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ModelsFileError(f"models file {path}: 'model' must be [[model]] tables")
    specs = [_validate(path, i, table, registry) for i, table in enumerate(tables, start=1)]
    ids = [spec["id"] for spec in specs]
    for i, model_id in enumerate(ids):
        if model_id in ids[:i]:
            raise ModelsFileError(f"models file {path}: entry {i + 1} ({model_id!r}), field 'id': "
                                  "the id is used by an earlier entry")
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.append(folder)
    entries = []
    for spec in specs:
        entry = _entry(path, spec, import_cache or default_import_cache())
        try:
            entry = registry.register(entry)
        except Exception as exc:  # the architecture cannot even run once: list it, unavailable
            entry = _broken(spec, f"model {spec['id']!r} could not be built and run once "
                                  f"({type(exc).__name__}: {exc})")
            entry = registry.register(entry)
        status = entry.weights.status()
        if status.state == "unavailable":
            log.warning("models file %s: %s", path, status.detail)
        entries.append(entry)
    return entries


def _fail(path: Path, index: int, table: dict[str, Any], field: str, problem: str) -> ModelsFileError:
    name = f" ({table['id']!r})" if isinstance(table.get("id"), str) else ""
    return ModelsFileError(f"models file {path}: entry {index}{name}, field {field!r}: {problem}")


def _validate(path: Path, index: int, table: dict[str, Any], registry: ModelRegistry) -> dict[str, Any]:
    """Types and shape of one table; anything wrong here is the file's mistake and stops start-up."""
    for key in table:
        if key not in FIELDS:
            raise _fail(path, index, table, key, f"unknown field (known: {', '.join(sorted(FIELDS))})")
    model_id = table.get("id")
    if not isinstance(model_id, str) or not MODEL_ID.fullmatch(model_id):
        raise _fail(path, index, table, "id", "required, a string of [a-z0-9._-]+")
    if model_id in registry:
        raise _fail(path, index, table, "id", "a model with this id already exists (ids are unique)")
    given = [b for b in BUILDERS if b in table]
    if len(given) != 1:
        raise _fail(path, index, table, given[1] if len(given) > 1 else "torchvision",
                    "give exactly one of torchvision, timm, factory, onnx or keras")
    builder = given[0]
    checks: dict[str, tuple[Callable[[Any], bool], str]] = {
        "title": (lambda v: isinstance(v, str), "a string"),
        builder: (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
        "kwargs": (lambda v: isinstance(v, dict), "a table, e.g. { num_classes = 5 }"),
        "weights": (lambda v: isinstance(v, str) and bool(v), "a path to a state_dict file"),
        "labels": (lambda v: (isinstance(v, str) and bool(v)) or (isinstance(v, list) and bool(v)
                   and all(isinstance(x, str) for x in v)), "a list of strings or a path to a text file"),
        "input": (lambda v: isinstance(v, dict) and set(v) == set(INPUT_FIELDS)
                  and all(isinstance(v[k], int) and not isinstance(v[k], bool) and 0 < v[k] <= 4096 for k in v)
                  and v["channels"] in (1, 3), "{ channels = 1 or 3, height = H, width = W }"),
        "resize": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 4096, "a positive integer"),
        "mean": (_floats, "a list of 1 or 3 numbers"),
        "std": (lambda v: _floats(v) and all(x > 0 for x in v), "a list of 1 or 3 positive numbers"),
        "grayscale": (lambda v: isinstance(v, bool), "true or false"),
        "target_layer": (lambda v: isinstance(v, str) and bool(v), "a layer name, e.g. \"layer4\""),
        "examples": (lambda v: isinstance(v, str) and bool(EXAMPLES.fullmatch(v)),
                     "\"mnist\", \"shapes\", \"photos\" or \"folder:NAME\" (a named image folder)"),
    }
    for key, (ok, what) in checks.items():
        if key in table and not ok(table[key]):
            raise _fail(path, index, table, key, f"must be {what}")
    if builder == "factory" and (":" not in table["factory"] or table["factory"].count(":") != 1):
        raise _fail(path, index, table, "factory", 'must be "package.module:function"')
    if builder == "factory" and "input" not in table:
        raise _fail(path, index, table, "input", "required for a factory model: { channels, height, width }")
    channels = table.get("input", {}).get("channels", 3)
    if table.get("grayscale") and channels != 1:
        raise _fail(path, index, table, "grayscale", "grayscale = true needs input.channels = 1")
    for key in ("mean", "std"):
        if key in table and len(table[key]) not in (1, channels):
            raise _fail(path, index, table, key, f"needs 1 or {channels} values (input.channels = {channels})")
    return {**table, "builder": builder}


def _floats(v: Any) -> bool:
    return isinstance(v, list) and len(v) in (1, 3) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)


def _architecture(spec: dict[str, Any]) -> Callable[[], nn.Module]:
    kind, name, kwargs = spec["builder"], spec[spec["builder"]], dict(spec.get("kwargs", {}))
    if kind == "torchvision":
        import torchvision

        if name not in torchvision.models.list_models():
            raise LookupError(f"torchvision has no model builder named {name!r}")
        return lambda: torchvision.models.get_model(name, weights=None, **kwargs)
    if kind == "timm":
        import timm

        if not timm.is_model(name):
            raise LookupError(f"timm has no model named {name!r}")
        return lambda: timm.create_model(name, pretrained=False, **kwargs)
    module_name, function_name = name.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise LookupError(f"the factory module {module_name!r} cannot be imported ({type(exc).__name__}: {exc})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise LookupError(f"{module_name} has no function {function_name!r}")

    def build() -> nn.Module:
        model = function(**kwargs)
        if not isinstance(model, nn.Module):
            raise TypeError(f"{name} returned a {type(model).__name__}, not a torch.nn.Module")
        return model

    return build


def _broken(spec: dict[str, Any], problem: str) -> ModelEntry:
    size = spec.get("input", {"channels": 3, "height": 224, "width": 224})
    return ModelEntry(
        id=spec["id"], title=spec.get("title", spec["id"]), dataset="your models file", family="file",
        input=InputSpec(size["channels"], size["height"], size["width"]), categories=("?",),
        builder=_refuse(problem), make_preprocess=_refuse(problem),  # type: ignore[arg-type]
        weights=NoWeights(problem, state="unavailable"), target_layer=spec.get("target_layer", ""),
        description=problem, problem=problem,
    )


def _refuse(problem: str) -> Callable[[], Any]:
    def refuse() -> Any:
        raise RuntimeError(problem)
    return refuse


def _entry(path: Path, spec: dict[str, Any], import_cache: Path) -> ModelEntry:
    model_id = spec["id"]
    if spec["builder"] in ("onnx", "keras"):
        return _imported_entry(path, spec, import_cache)
    try:
        architecture = _architecture(spec)
    except LookupError as exc:
        return _broken(spec, f"model {model_id!r}: {exc}")
    kind = spec["builder"]
    default: ModelEntry | None = None
    if kind == "timm":
        default = timm_entry(model_id, spec["timm"], kwargs=spec.get("kwargs"))
    weights: WeightsSource
    if "weights" in spec:
        weights = LocalWeights((path.parent / spec["weights"]).resolve(), architecture, model_id)
    elif default is not None:
        weights = default.weights
    elif kind == "torchvision" and not spec.get("kwargs"):
        import torchvision

        weights = HubWeights(torchvision.models.get_model_weights(spec["torchvision"]).DEFAULT.url)
    else:
        weights = NoWeights(f"model {model_id!r} names no weights file; it runs with untrained (random) weights")
    try:
        labels = _labels(path, spec)
    except OSError as exc:
        return _broken(spec, f"model {model_id!r}: the labels file cannot be read ({exc.strerror or exc})")
    input_spec, make_preprocess = _preprocessing(spec, default)
    try:
        outputs = _output_count(architecture, input_spec)
    except Exception as exc:
        return _broken(spec, f"model {model_id!r} could not be built and run once on a "
                             f"{input_spec.channels}×{input_spec.height}×{input_spec.width} input "
                             f"({type(exc).__name__}: {exc})")
    labels = _labels_for(labels, outputs)
    if isinstance(labels, str):
        return _broken(spec, f"model {model_id!r}: {labels}")
    return ModelEntry(
        id=model_id, title=spec.get("title", model_id),
        dataset="ImageNet-1k" if labels == imagenet_categories() else "your models file",
        family="file", input=input_spec, categories=tuple(labels), builder=architecture,
        make_preprocess=make_preprocess, weights=weights, target_layer=spec.get("target_layer", ""),
        description=f"From {path.name}: {kind} {spec[kind]}" + (f" with {spec['kwargs']}" if spec.get("kwargs") else ""),
        meta={"models_file": str(path), kind: spec[kind], **({"examples": spec["examples"]} if "examples" in spec else {})},
    )


def _labels(path: Path, spec: dict[str, Any]) -> tuple[str, ...] | None:
    labels = spec.get("labels")
    if labels is None:
        return None
    if isinstance(labels, list):
        return tuple(labels)
    lines = (path.parent / labels).read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip())


def _preprocessing(spec: dict[str, Any], default: ModelEntry | None) -> tuple[InputSpec, Callable[[], Preprocess]]:
    custom = any(k in spec for k in ("input", "resize", "mean", "std", "grayscale"))
    if not custom and default is not None:
        return default.input, default.make_preprocess
    if not custom and spec["builder"] == "torchvision" and not spec.get("kwargs"):
        import torchvision

        weights_enum = torchvision.models.get_model_weights(spec["torchvision"]).DEFAULT
        crop = weights_enum.transforms().crop_size[0]
        return InputSpec(3, crop, crop), lambda: torchvision_transforms(weights_enum)
    size = spec.get("input") or {"channels": default.input.channels if default else 3,
                                 "height": default.input.height if default else 224,
                                 "width": default.input.width if default else 224}
    input_spec = InputSpec(size["channels"], size["height"], size["width"])
    grayscale = bool(spec.get("grayscale", input_spec.channels == 1))
    mean = tuple(spec.get("mean", [0.0]))
    std = tuple(spec.get("std", [1.0]))
    resize = spec.get("resize")

    def make() -> Preprocess:
        return resize_crop_normalise(input_spec.height, input_spec.width, resize=resize, mean=mean, std=std,
                                     grayscale=grayscale)

    return input_spec, make


def _output_count(architecture: Callable[[], nn.Module], input_spec: InputSpec) -> int:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = architecture().eval()
    with torch.no_grad():
        out = model(torch.zeros(1, input_spec.channels, input_spec.height, input_spec.width))
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise TypeError(f"the model's output is {type(out).__name__} of shape {getattr(out, 'shape', '?')}, "
                        "not batch × classes")
    return int(out.shape[1])


def _imported_entry(path: Path, spec: dict[str, Any], import_cache: Path) -> ModelEntry:
    """An ``onnx = …`` or ``keras = …`` entry: the file converted (see :mod:`models.imported`); its input size
    and channels come from the graph where it states them, else from ``input``; mean/std from the graph's
    metadata (``mean``/``std`` as comma-separated numbers) where it has them, else from the entry."""
    model_id, kind = spec["id"], spec["builder"]
    source = (path.parent / spec[kind]).resolve()
    if kind == "keras" and not keras_available():
        return _broken(spec, f"model {model_id!r} is a Keras model and Keras is not installed: {KERAS_INSTALL}")
    if not source.is_file():
        return _broken(spec, f"model {model_id!r}: the {kind} file {spec[kind]} is missing")
    try:
        if kind == "keras":
            graph, key = cached_graph(source, kind, import_cache, GraphLimits())
        else:
            graph, key = normalised_graph(source, kind, GraphLimits()), sha256_of(source)
        imported = ImportedModel.from_graph(graph, key, source.name)
    except ModelFileRefused as exc:
        return _broken(spec, f"model {model_id!r} ({source.name}): {exc.message}")
    return imported_entry(model_id, spec, imported, graph.metadata, dataset="your models file",
                          description=f"From {path.name}: {kind} {spec[kind]}", labels_from=path,
                          meta={"models_file": str(path), kind: spec[kind]})


def imported_entry(model_id: str, spec: dict[str, Any], imported: ImportedModel, metadata: dict[str, str], *,
                   dataset: str, description: str, labels_from: Path | None, meta: dict[str, Any]) -> ModelEntry:
    """The registry entry of a converted model (a models-file entry or an upload)."""
    image = imported.image
    given = spec.get("input", {})
    size = {"channels": image.channels or given.get("channels"), "height": image.height or given.get("height"),
            "width": image.width or given.get("width")}
    if not all(size.values()):
        return _broken(spec, f"model {model_id!r}: the graph does not state its input size; give "
                             "input = { channels, height, width }")
    stated = {key: _numbers(metadata.get(key)) for key in ("mean", "std")}
    spec = {**spec, "input": size, **{k: v for k, v in stated.items() if v is not None}}
    input_spec, make_preprocess = _preprocessing(spec, None)
    architecture = imported.untrained
    try:
        labels = _labels(labels_from, spec) if labels_from is not None else spec.get("labels")
        outputs = _output_count(architecture, input_spec)
    except OSError as exc:
        return _broken(spec, f"model {model_id!r}: the labels file cannot be read ({exc.strerror or exc})")
    except Exception as exc:
        return _broken(spec, f"model {model_id!r} could not run once on a {input_spec.channels}×{input_spec.height}×"
                             f"{input_spec.width} input ({type(exc).__name__}: {exc})")
    labels = _labels_for(labels, outputs)
    if isinstance(labels, str):
        return _broken(spec, f"model {model_id!r}: {labels}")
    return ModelEntry(
        id=model_id, title=spec.get("title", model_id),
        dataset="ImageNet-1k" if tuple(labels) == imagenet_categories() else dataset,
        family="file", input=input_spec, categories=tuple(labels), builder=architecture,
        make_preprocess=make_preprocess, weights=ImportedWeights(imported), target_layer=spec.get("target_layer", ""),
        description=description,
        meta={**meta, "sha256": imported.sha256, "layer_labels": imported.graph_labels},
    )


def _numbers(text: str | None) -> list[float] | None:
    if not text:
        return None
    try:
        values = [float(part) for part in text.replace("[", "").replace("]", "").split(",") if part.strip()]
    except ValueError:
        return None
    return values if len(values) in (1, 3) else None


def _labels_for(labels: list[str] | tuple[str, ...] | None, outputs: int) -> tuple[str, ...] | str:
    """The class names for a model with ``outputs`` outputs (ImageNet's for 1000, else numbered), or why the
    given ones do not fit."""
    if labels is None:
        return imagenet_categories() if outputs == 1000 else tuple(f"class {i}" for i in range(outputs))
    if len(labels) != outputs:
        return f"labels names {len(labels)} classes but the model gives {outputs} outputs"
    return tuple(labels)

