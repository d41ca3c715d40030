"""Read an ONNX file safely: the checks a hostile file needs, before anything large is allocated.

The node count (subgraphs included), each tensor's declared size against the bytes really present, external
data files that must lie inside the model's folder (a path in the file is a path-traversal hole when
followed blindly), exactly one float image input, and an ``onnx2torch`` converter for every operator (the
missing ones named). :mod:`models.imported.normalise` then rewrites the graph for ``onnx2torch``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from onnx import TensorProto

TARGET_OPSET = 17  # the newest default-domain opset every onnx2torch 1.5 converter we need accepts


class ModelFileRefused(ValueError):
    """The file cannot become a model; ``message`` is a sentence for a person, ``status``/``code`` the HTTP
    answer an upload gets for it."""

    def __init__(self, message: str, status: int = 422, code: str = "model_unsupported") -> None:
        super().__init__(message)
        self.message, self.status, self.code = message, status, code


@dataclass(frozen=True)
class GraphLimits:
    max_nodes: int = 20_000  # ResNet-152 exports to ~500 nodes, EfficientNet-B7 to ~3,000
    max_tensor_bytes: int = 1024 * 1024 * 1024  # every initializer together, as declared by their shapes


@dataclass
class ImageInput:
    """The graph's one image input, as the graph states it (None where a size is symbolic)."""

    channels: int | None
    height: int | None
    width: int | None
    channels_last: bool = False


@dataclass
class NormalisedGraph:
    model: onnx.ModelProto
    image: ImageInput
    labels: dict[str, str] = field(default_factory=dict)  # module name → the ONNX node's own name
    source_opset: int = 0
    metadata: dict[str, str] = field(default_factory=dict)


_ITEM_BYTES = {TensorProto.FLOAT: 4, TensorProto.DOUBLE: 8, TensorProto.FLOAT16: 2, TensorProto.BFLOAT16: 2,
               TensorProto.INT8: 1, TensorProto.UINT8: 1, TensorProto.INT16: 2, TensorProto.UINT16: 2,
               TensorProto.INT32: 4, TensorProto.UINT32: 4, TensorProto.INT64: 8, TensorProto.UINT64: 8,
               TensorProto.BOOL: 1}


def parse(data: bytes, limits: GraphLimits) -> onnx.ModelProto:
    """Parse the bytes of an ``.onnx`` file (without following external data) and check its size."""
    if not data:
        raise ModelFileRefused("The model file is empty.", 400, "empty_file")
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and friends: truncated or not ONNX at all
        raise ModelFileRefused(f"The file is not a readable ONNX model (truncated or not ONNX: "
                               f"{type(exc).__name__}).", 422, "corrupt_model") from None
    if not model.graph.node:
        raise ModelFileRefused("The file holds no ONNX graph (no nodes); it is truncated or not an ONNX model.",
                               422, "corrupt_model")
    check_size(model, limits)
    return model


def check_size(model: onnx.ModelProto, limits: GraphLimits) -> None:
    """Node count and declared tensor sizes, before anything is allocated for them."""
    nodes = _count_nodes(model.graph)
    if nodes > limits.max_nodes:
        raise ModelFileRefused(f"The graph has {nodes:,} nodes; at most {limits.max_nodes:,} are read "
                               "(real image classifiers have a few thousand at most).", 413, "model_too_large")
    total = 0
    for tensor in _all_tensors(model.graph):
        declared = _declared_bytes(tensor)
        total += declared
        if total > limits.max_tensor_bytes:
            raise ModelFileRefused(f"Tensor {tensor.name!r} declares {declared / 2**20:,.0f} MB "
                                   f"(shape {list(tensor.dims)}); the model's tensors may take "
                                   f"{limits.max_tensor_bytes / 2**20:,.0f} MB in all.", 413, "model_too_large")
        if tensor.data_location != TensorProto.EXTERNAL and tensor.HasField("raw_data") \
                and len(tensor.raw_data) != declared:
            raise ModelFileRefused(f"Tensor {tensor.name!r} declares shape {list(tensor.dims)} "
                                   f"({declared:,} bytes) but holds {len(tensor.raw_data):,} bytes: the file "
                                   "is damaged.", 422, "corrupt_model")


def _count_nodes(graph: onnx.GraphProto) -> int:
    count = 0
    for node in graph.node:
        count += 1
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                count += _count_nodes(attr.g)
            for sub in attr.graphs:
                count += _count_nodes(sub)
    return count


def _all_tensors(graph: onnx.GraphProto):  # noqa: ANN202 - a generator of TensorProto
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_tensors(attr.g)


def _declared_bytes(tensor: TensorProto) -> int:
    if any(d < 0 for d in tensor.dims):
        raise ModelFileRefused(f"Tensor {tensor.name!r} has a negative dimension {list(tensor.dims)}.",
                               422, "corrupt_model")
    return math.prod(tensor.dims) * _ITEM_BYTES.get(tensor.data_type, 8)


def load_external_data(model: onnx.ModelProto, folder: Path | None) -> None:
    """Read external-data tensors, each only from a file inside ``folder`` (None: none allowed, as for an
    upload, which is one file)."""
    external = [t for t in _all_tensors(model.graph) if t.data_location == TensorProto.EXTERNAL]
    if not external:
        return
    if folder is None:
        raise ModelFileRefused(f"Tensor {external[0].name!r} keeps its data in a separate file; an uploaded "
                               "model must be one .onnx file with its weights inside (re-export it without "
                               "external data).", 422, "external_data_refused")
    root = folder.resolve()
    for tensor in external:
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        target = (root / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(root):
            raise ModelFileRefused(f"Tensor {tensor.name!r} keeps its data at {location!r}, outside the model's "
                                   "folder; external data is read only from beside the model.",
                                   422, "external_data_refused")
        if not target.is_file():
            raise ModelFileRefused(f"Tensor {tensor.name!r} keeps its data in {location!r}, which is missing.",
                                   422, "external_data_refused")
        offset, length = int(info.get("offset", 0) or 0), int(info.get("length", 0) or 0)
        declared = _declared_bytes(tensor)
        if (length and length != declared) or offset + declared > target.stat().st_size:
            raise ModelFileRefused(f"Tensor {tensor.name!r} needs {declared:,} bytes from {location!r} at offset "
                                   f"{offset:,}, which the file does not hold.", 422, "corrupt_model")
    onnx.external_data_helper.load_external_data_for_model(model, str(root))


def first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ModelFileRefused("The graph imports no standard ONNX opset.")


def image_input(model: onnx.ModelProto) -> ImageInput:
    initializers = {t.name for t in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(repr(v.name) for v in inputs) or "none"
        raise ModelFileRefused(f"The graph has {len(inputs)} inputs ({names}); ConvScope shows models with exactly "
                               "one image input.")
    value = inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise ModelFileRefused(f"The graph's input {value.name!r} has {len(dims)} dimensions; an image input has "
                               "4 (batch, channels, height, width).")
    if value.type.tensor_type.elem_type not in (TensorProto.FLOAT, 0):
        raise ModelFileRefused(f"The graph's input {value.name!r} is not float32; ConvScope feeds float32 images.")
    _n, a, b, c = dims
    if a not in (1, 3) and c in (1, 3):
        return ImageInput(c, a, b, channels_last=True)
    return ImageInput(a, b, c)


def check_supported(model: onnx.ModelProto) -> None:
    """Every operator has an ``onnx2torch`` converter, or the first ones missing are named."""
    from onnx2torch.node_converters.registry import get_converter

    opsets = {entry.domain or "": int(entry.version) for entry in model.opset_import}
    missing: list[str] = []
    for node in model.graph.node:
        domain = node.domain or ""
        try:
            get_converter(operation_type=node.op_type, version=opsets.get(domain, TARGET_OPSET), domain=domain)
        except NotImplementedError:
            name = f"{domain + '.' if domain else ''}{node.op_type} (opset {opsets.get(domain, '?')})"
            if name not in missing:
                missing.append(name)
    if missing:
        raise ModelFileRefused(f"The graph uses operator{'s' if len(missing) > 1 else ''} "
                               f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''} that onnx2torch cannot "
                               "convert to PyTorch.")
