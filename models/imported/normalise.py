"""Normalise what ONNX exporters write into a graph ``onnx2torch`` converts, keeping its meaning.

What current exporters write and ``onnx2torch`` 1.5 refuses, and what :func:`normalise` does about it:

* opset 18-20 operators (``Identity`` v19, ``ReduceMean`` v18, ``Cast`` v19…): the graph is converted to
  opset :data:`TARGET_OPSET` with ONNX's own version converter (operators it has no adapter for but whose
  meaning did not change are parked meanwhile);
* weights reached through ``Constant`` or ``Identity`` nodes (``torch.onnx.export`` folds a Conv bias into an
  ``Identity`` of a shared initializer): they become initializers, so a Conv's weight and bias are
  parameters of an ``nn.Conv2d`` again;
* shape arithmetic on static sizes (Keras computes its "same" padding at run time): computed ahead;
* Keras's channels-last layout: an N×C×H×W input is put in front, the convolution's bias goes back into the
  ``Conv`` and the transposes around it sink below the activations and cancel;
* a final ``Softmax``: dropped (ConvScope applies softmax to the logits itself);
* node names with ``/`` or ``.`` (``/layer1/layer1.0/conv1/Conv``): renamed to URL-safe module names
  (``layer1_0_conv1_Conv``); the original names are kept as labels.
"""

from __future__ import annotations

import math
import re

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.imported.onnx_graph import (
    TARGET_OPSET,
    ModelFileRefused,
    NormalisedGraph,
    check_supported,
    default_opset,
    first_line,
    image_input,
)


def normalise(model: onnx.ModelProto, metadata_source: dict[str, str] | None = None) -> NormalisedGraph:
    """The graph ``onnx2torch`` can convert (see the module's docstring), or :class:`ModelFileRefused`."""
    image = image_input(model)
    opset = default_opset(model)
    if opset > TARGET_OPSET:
        model = _to_target_opset(model, opset)
    fixed_batch = _free_batch(model.graph)
    for node in model.graph.node:  # trailing empty optional inputs (Clip(x, min, "")) mean "not given"
        while len(node.input) and not node.input[-1]:
            node.input.pop()
    _constants_to_initializers(model.graph)
    _fold_initializer_identities(model.graph)
    for _round in range(64):  # each folded padding lets shape inference see one layer further
        before = len(model.graph.node)
        _fold_static_dims(model)
        _fold_constant_nodes(model)
        _drop_dead_nodes(model.graph)
        if len(model.graph.node) == before:
            break
    if fixed_batch is not None:
        _free_reshape_batch(model.graph, fixed_batch)
    _drop_noop_casts(model)
    _drop_final_softmax(model.graph)
    _drop_moot_allowzero(model.graph)
    labels = _safe_node_names(model.graph)
    if image.channels_last:
        _transpose_input(model.graph)
    _fuse_channels_last_bias(model.graph)
    _sink_transposes(model.graph)
    labels = {node.name: labels.get(node.name, node.name) for node in model.graph.node}
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as exc:
        raise ModelFileRefused(f"ONNX shape inference failed on the graph ({first_line(exc)}).") from None
    check_supported(model)
    metadata = {p.key: p.value for p in model.metadata_props}
    return NormalisedGraph(model, image, labels, opset, {**metadata, **(metadata_source or {})})


def _free_batch(graph: onnx.GraphProto) -> int | None:
    """Exporters often fix the batch size (1) in the graph; ConvScope runs batches. The input's and outputs'
    first dimension becomes symbolic (stale inferred shapes go); returns the size it had, or None."""
    initializers = {t.name for t in graph.initializer}
    value = next(v for v in graph.input if v.name not in initializers)
    first = value.type.tensor_type.shape.dim[0]
    if not first.HasField("dim_value"):
        return None
    fixed = int(first.dim_value)
    for info in [value, *graph.output]:
        dims = info.type.tensor_type.shape.dim
        if len(dims) and dims[0].HasField("dim_value") and dims[0].dim_value == fixed:
            dims[0].dim_param = "batch"
    del graph.value_info[:]
    return fixed


def _free_reshape_batch(graph: onnx.GraphProto, fixed: int) -> None:
    """A ``Reshape`` to a constant shape that starts with the fixed batch size (the dynamo exporter's
    ``[1, 512]`` before the classifier) starts with -1 instead, when it has no other -1."""
    tensors = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) != 2 or node.input[1] not in tensors:
            continue
        shape = numpy_helper.to_array(tensors[node.input[1]]).astype(np.int64).reshape(-1)
        if len(shape) >= 2 and shape[0] == fixed and -1 not in shape.tolist():
            shape[0] = -1
            name = f"{node.input[1]}_free_batch"
            if name not in tensors:
                graph.initializer.append(numpy_helper.from_array(shape, name))
                tensors[name] = graph.initializer[-1]
            node.input[1] = name


_PARKED = "convscope.parked"


def _parkable(node: onnx.NodeProto) -> bool:
    """Operators whose versions after 17 only added types or inputs this node does not use, and for which
    ONNX's version converter has no down-adapter: ``ConstantOfShape`` (v20: more types), ``Pad`` (v18: an
    ``axes`` input; v19: ``wrap`` mode)."""
    if node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type == "ConstantOfShape":
        return True
    if node.op_type == "Pad":
        mode = next((a.s for a in node.attribute if a.name == "mode"), b"constant")
        return (len(node.input) < 4 or not node.input[3]) and mode != b"wrap"
    return False


def _to_target_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """ONNX's version converter, with the operators it has no adapter for but whose meaning at opset 17 is
    the same (see :func:`_parkable`) parked in a private domain meanwhile."""
    parked = [node for node in model.graph.node if _parkable(node)]
    for node in parked:
        node.domain = _PARKED
    if parked:
        model.opset_import.append(helper.make_opsetid(_PARKED, 1))
    try:
        converted = onnx.version_converter.convert_version(model, TARGET_OPSET)
    except Exception as exc:
        raise ModelFileRefused(f"The graph uses opset {opset}, and ONNX's version converter could not bring "
                               f"it to opset {TARGET_OPSET} ({type(exc).__name__}: {first_line(exc)}).") from None
    for node in converted.graph.node:
        if node.domain == _PARKED:
            node.domain = ""
    kept = [entry for entry in converted.opset_import if entry.domain != _PARKED]
    del converted.opset_import[:]
    converted.opset_import.extend(kept)
    return converted


def _drop_final_softmax(graph: onnx.GraphProto) -> None:
    """A classifier that ends in ``Softmax`` (Keras's ``activation="softmax"``) gives probabilities; ConvScope
    applies the softmax itself, so the graph's output becomes the logits before it."""
    if len(graph.output) != 1:
        return
    producer = [node for node in graph.node if graph.output[0].name in node.output]
    consumers = [node for node in graph.node if producer and producer[0].input[0] in node.input]
    if not producer or producer[0].op_type != "Softmax" or len(consumers) != 1:
        return
    node = producer[0]
    output = graph.output[0]
    logits = onnx.ValueInfoProto()
    logits.CopyFrom(output)
    logits.name = node.input[0]
    graph.node.remove(node)
    graph.output.remove(output)
    graph.output.append(logits)


def _constants_to_initializers(graph: onnx.GraphProto) -> None:
    keep = []
    for node in graph.node:
        values = [a for a in node.attribute if a.name == "value" and a.type == onnx.AttributeProto.TENSOR]
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and values and len(node.output) == 1:
            tensor = TensorProto()
            tensor.CopyFrom(values[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            keep.append(node)
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)


def _fold_initializer_identities(graph: onnx.GraphProto) -> None:
    """``Identity(initializer)`` becomes a copy of that initializer under the Identity's output name."""
    tensors = {t.name: t for t in graph.initializer}
    outputs = {v.name for v in graph.output}
    keep = []
    for node in graph.node:  # topological order: a chain of Identities folds front to back
        if node.op_type == "Identity" and len(node.input) == 1 and node.input[0] in tensors \
                and node.output[0] not in outputs:
            tensor = TensorProto()
            tensor.CopyFrom(tensors[node.input[0]])
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
            tensors[tensor.name] = tensor
        else:
            keep.append(node)
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)


def _fold_static_dims(model: onnx.ModelProto) -> None:
    """``Gather(Shape(x), i)`` where dimension ``i`` of ``x`` is static becomes that number. Keras computes
    its "same" padding from the input's height and width at run time this way; folded, the padding is a
    constant and the batch size stays free."""
    graph = model.graph
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
    except Exception:
        return  # nothing folded; the check at the end names what does not convert
    dims: dict[str, list[int | None]] = {}
    for value in [*inferred.input, *inferred.value_info, *inferred.output]:
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            dims[value.name] = [d.dim_value if d.HasField("dim_value") else None
                                for d in value.type.tensor_type.shape.dim]
    constants = {t.name: t for t in graph.initializer}
    shapes: dict[str, list[int | None]] = {}
    for node in graph.node:
        if node.op_type == "Shape" and node.input[0] in dims:
            shape = dims[node.input[0]]
            start = next((a.i for a in node.attribute if a.name == "start"), 0)
            end = next((a.i for a in node.attribute if a.name == "end"), len(shape))
            shapes[node.output[0]] = shape[slice(start, end)]
    keep = []
    for node in graph.node:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if node.op_type == "Gather" and axis == 0 and node.input[0] in shapes and node.input[1] in constants:
            index = numpy_helper.to_array(constants[node.input[1]])
            shape = shapes[node.input[0]]
            picked = [shape[int(i)] if -len(shape) <= int(i) < len(shape) else None for i in index.reshape(-1)]
            if all(v is not None for v in picked):
                value = np.array(picked, dtype=np.int64).reshape(index.shape)
                graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
                constants[node.output[0]] = graph.initializer[-1]
                continue
        keep.append(node)
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)


FOLD_MAX_ELEMENTS = 1 << 20  # a node is computed ahead only when its inputs and output are this small
_NOT_FOLDED = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


def _fold_constant_nodes(model: onnx.ModelProto) -> None:
    """Compute ahead every small node whose inputs are all constants (shape arithmetic, weight reshapes) with
    ONNX's reference implementation; its outputs become initializers."""
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    constants = {t.name: t for t in graph.initializer}
    opsets = list(model.opset_import)
    keep = []
    for node in graph.node:
        inputs = [name for name in node.input if name]
        foldable = (node.domain in ("", "ai.onnx") and node.op_type not in _NOT_FOLDED and inputs
                    and all(name in constants for name in inputs)
                    and all(math.prod(constants[n].dims) <= FOLD_MAX_ELEMENTS for n in inputs)
                    and _output_elements(node, constants) <= FOLD_MAX_ELEMENTS)
        if foldable:
            try:
                single = helper.make_model(helper.make_graph(
                    [node], "fold", [], [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in node.output],
                    [constants[n] for n in dict.fromkeys(inputs)]), opset_imports=opsets, ir_version=model.ir_version)
                values = ReferenceEvaluator(single).run(None, {})
            except Exception:
                values = None
            if values is not None and all(np.asarray(v).size <= FOLD_MAX_ELEMENTS for v in values):
                for name, value in zip(node.output, values):
                    graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
                    constants[name] = graph.initializer[-1]
                continue
        keep.append(node)
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)


def _output_elements(node: onnx.NodeProto, constants: dict[str, TensorProto]) -> int:
    """How many elements an operator that can grow its input would make, from its constant inputs."""
    def value(i: int) -> np.ndarray:
        return numpy_helper.to_array(constants[node.input[i]]).reshape(-1)

    try:
        if node.op_type == "ConstantOfShape":
            return math.prod(int(v) for v in value(0))
        if node.op_type == "Expand":
            return math.prod(max(int(a), 1) for a in value(1)) * max(math.prod(constants[node.input[0]].dims), 1)
        if node.op_type == "Tile":
            return math.prod(constants[node.input[0]].dims) * math.prod(int(v) for v in value(1))
        if node.op_type == "Range":
            start, limit, delta = (float(value(i)[0]) for i in range(3))
            return max(0, math.ceil((limit - start) / delta)) if delta else FOLD_MAX_ELEMENTS + 1
        if node.op_type in ("Resize", "Upsample", "Col2Im", "Einsum", "MatMul", "Gemm", "Conv", "ConvTranspose"):
            return FOLD_MAX_ELEMENTS + 1  # sizes that need more arithmetic: left to run time
    except (IndexError, ValueError, OverflowError):
        return FOLD_MAX_ELEMENTS + 1
    return 0


def _drop_dead_nodes(graph: onnx.GraphProto) -> None:
    """Nodes none of whose outputs is used any more (the Shape a folded Gather read), and initializers
    nothing reads."""
    needed = {v.name for v in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
            for attr in node.attribute:  # names a subgraph reads from the outer scope
                for sub in [attr.g, *attr.graphs]:
                    needed.update(i for n in sub.node for i in n.input)
    keep.reverse()
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)
    used = [t for t in graph.initializer if t.name in needed]
    if len(used) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(used)


def _drop_noop_casts(model: onnx.ModelProto) -> None:
    """``Cast`` to the type its input has already (Keras writes one around nearly every operation) goes."""
    graph = model.graph
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
    except Exception:
        return
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.input, *inferred.value_info]
             if v.type.HasField("tensor_type")}
    outputs = {v.name for v in graph.output}
    rename: dict[str, str] = {}
    keep = []
    for node in graph.node:
        node.input[:] = [rename.get(name, name) for name in node.input]
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if node.op_type == "Cast" and to is not None and types.get(node.input[0]) == to \
                and node.output[0] not in outputs:
            rename[node.output[0]] = node.input[0]
            continue
        keep.append(node)
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)


def _perm(node: onnx.NodeProto) -> list[int]:
    return list(next((a.ints for a in node.attribute if a.name == "perm"), []))


def _consumers(graph: onnx.GraphProto, name: str) -> list[onnx.NodeProto]:
    return [node for node in graph.node if name in node.input]


def _rewire(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]


_ELEMENTWISE = {"Relu", "LeakyRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Softplus",
                "Gelu", "Mish", "Identity"}


def _sink_transposes(graph: onnx.GraphProto) -> None:
    """Keras on torch wraps each convolution and pooling in transposes (NHWC → NCHW, op, back), so the
    activation after a convolution is channels-last — a layer view would read its width as channels. A
    transpose is moved below the one-input elementwise operations that follow it (ReLU…), and a transpose
    followed by its inverse goes: every convolution's and activation's output is then N×C×H×W."""
    outputs = {v.name for v in graph.output}
    changed = True
    while changed:
        changed = False
        for t in list(graph.node):
            if t.op_type != "Transpose" or t.output[0] in outputs:
                continue
            users = _consumers(graph, t.output[0])
            if len(users) != 1:
                continue
            user = users[0]
            if user.op_type in _ELEMENTWISE and len(user.input) == 1 and user.output[0] not in outputs:
                source, middle, end = t.input[0], t.output[0], user.output[0]
                user.input[0], user.output[0] = source, middle
                t.input[0], t.output[0] = middle, end
                nodes = list(graph.node)
                i, j = nodes.index(t), nodes.index(user)
                nodes[i], nodes[j] = nodes[j], nodes[i]
                del graph.node[:]
                graph.node.extend(nodes)
                changed = True
            elif user.op_type == "Transpose" and user.output[0] not in outputs \
                    and [_perm(t)[k] for k in _perm(user)] == list(range(len(_perm(t)))):
                _rewire(graph, user.output[0], t.input[0])
                graph.node.remove(user)
                graph.node.remove(t)
                changed = True
            if changed:
                break


def _fuse_channels_last_bias(graph: onnx.GraphProto) -> None:
    """Keras on torch writes a convolution as ``Conv`` (no bias) → ``Transpose`` to channels-last → ``Add``
    bias. The bias goes back into the ``Conv``, so the ``nn.Conv2d``'s output is the Keras layer's output."""
    tensors = {t.name: t for t in graph.initializer}
    outputs = {v.name for v in graph.output}
    for conv in list(graph.node):
        if conv.op_type != "Conv" or len(conv.input) != 2 or conv.input[1] not in tensors:
            continue
        channels = tensors[conv.input[1]].dims[0]
        after = _consumers(graph, conv.output[0])
        if len(after) != 1 or after[0].op_type != "Transpose" or _perm(after[0]) != [0, 2, 3, 1]:
            continue
        adds = _consumers(graph, after[0].output[0])
        if len(adds) != 1 or adds[0].op_type != "Add" or adds[0].output[0] in outputs \
                or conv.output[0] in outputs or after[0].output[0] in outputs:
            continue
        add = adds[0]
        bias_name = next((n for n in add.input if n != after[0].output[0]), "")
        bias = tensors.get(bias_name)
        if bias is None or math.prod(bias.dims) != channels or any(d != 1 for d in list(bias.dims)[:-1]):
            continue
        flat = numpy_helper.to_array(bias).reshape(channels)
        graph.initializer.append(numpy_helper.from_array(flat, f"{conv.name or conv.output[0]}_bias"))
        conv.input.append(graph.initializer[-1].name)
        _rewire(graph, add.output[0], after[0].output[0])
        graph.node.remove(add)


def _drop_moot_allowzero(graph: onnx.GraphProto) -> None:
    """``Reshape(allowzero=1)`` (the dynamo exporter writes it) means something else than 0 only when the
    shape holds a 0; with a constant shape that holds none, it is dropped (onnx2torch refuses it)."""
    tensors = {t.name: t for t in graph.initializer}
    for node in graph.node:
        allow = [a for a in node.attribute if a.name == "allowzero"]
        if node.op_type == "Reshape" and allow and allow[0].i == 1 and len(node.input) == 2 \
                and node.input[1] in tensors and 0 not in numpy_helper.to_array(tensors[node.input[1]]).tolist():
            node.attribute.remove(allow[0])


_UNSAFE = re.compile(r"[^A-Za-z0-9_]+")


def _safe_node_names(graph: onnx.GraphProto) -> dict[str, str]:
    """Rename every node to a URL- and module-safe unique name; returns new name → original name."""
    labels: dict[str, str] = {}
    for index, node in enumerate(graph.node):
        original = node.name or f"{node.op_type}_{index}"
        segments = [s for s in original.split("/") if s]
        # torch.onnx.export's scopes repeat the path ("/layer1/layer1.0/conv1/Conv"): keep the longest
        segments = [s for i, s in enumerate(segments) if i + 1 == len(segments)
                    or not segments[i + 1].startswith(s + ".")]
        base = _UNSAFE.sub("_", "_".join(segments)).strip("_") or f"{node.op_type}_{index}"
        if base[0].isdigit():
            base = f"n_{base}"
        name, suffix = base, 1
        while name in labels:
            suffix += 1
            name = f"{base}_{suffix}"
        labels[name] = original
        node.name = name
    return labels


def _transpose_input(graph: onnx.GraphProto) -> None:
    """Put an N×C×H×W input in front of a channels-last graph (the Transpose becomes a permute)."""
    initializers = {t.name for t in graph.initializer}
    value = next(v for v in graph.input if v.name not in initializers)
    dims = value.type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]
    nchw_name = "image_nchw"
    while nchw_name in {v.name for v in graph.input} | {o for n in graph.node for o in n.output}:
        nchw_name += "_"
    nchw = helper.make_tensor_value_info(nchw_name, value.type.tensor_type.elem_type,
                                         [shape[0], shape[3], shape[1], shape[2]])
    transpose = helper.make_node("Transpose", [nchw_name], [value.name], name="to_channels_last", perm=[0, 2, 3, 1])
    graph.node.insert(0, transpose)
    position = list(graph.input).index(value)
    graph.input.remove(value)
    graph.input.insert(position, nchw)
