"""A Keras 3 ``.keras`` archive exported to ONNX by Keras itself, on its PyTorch backend.

Why this route: Keras 3 on the torch backend runs the model as torch operations already, and its own
``model.export(format="onnx")`` traces them with ``torch.onnx.export``; the graph then goes through the same
normalisation and ``onnx2torch`` as any ONNX file, so there is one conversion path to test, not two.

A ``.keras`` file is a zip archive (``config.json``, ``metadata.json``, ``model.weights.h5``). Before Keras
opens it, the archive's table of contents is checked: a zip bomb declares its expanded size there. Keras
loads with ``safe_mode=True`` (no ``Lambda`` layers' pickled code is run).
"""

from __future__ import annotations

import os
import tempfile
import warnings
import zipfile
from pathlib import Path

import onnx

from models.imported.onnx_graph import GraphLimits, ModelFileRefused, check_size

MAX_ENTRIES = 64  # a saved model has three files; Keras adds a few assets at most
MAX_RATIO = 200  # expanded / compressed size of one member: float weights compress by 1.1-3×, JSON by ~10×


def check_archive(source: Path, limits: GraphLimits) -> None:
    """Refuse what is not a ``.keras`` archive, and zip bombs, from the archive's table of contents."""
    try:
        with zipfile.ZipFile(source) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelFileRefused(f"The file is not a .keras archive (a zip file): {exc}.", 422, "corrupt_model") from None
    names = {m.filename for m in members}
    if "config.json" not in names:
        raise ModelFileRefused("The archive has no config.json: it is not a Keras 3 .keras file (a Keras 2 .h5 "
                               "file must be re-saved with model.save('name.keras')).", 422, "corrupt_model")
    if len(members) > MAX_ENTRIES:
        raise ModelFileRefused(f"The archive has {len(members):,} files; a .keras model has a handful.",
                               413, "model_too_large")
    expanded = sum(m.file_size for m in members)
    if expanded > limits.max_tensor_bytes + 16 * 1024 * 1024:
        raise ModelFileRefused(f"The archive expands to {expanded / 2**20:,.0f} MB; at most "
                               f"{limits.max_tensor_bytes / 2**20:,.0f} MB are read.", 413, "model_too_large")
    for member in members:
        if member.file_size > 1024 * 1024 and member.file_size > MAX_RATIO * max(member.compress_size, 1):
            raise ModelFileRefused(f"{member.filename} in the archive expands {member.file_size // max(member.compress_size, 1):,}"
                                   f"-fold ({member.file_size / 2**20:,.0f} MB): a zip bomb, not a model.",
                                   413, "model_too_large")


def keras_module():  # noqa: ANN202 - the keras module
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError:
        raise ModelFileRefused("Keras is not installed; .keras models need it: pip install \"convscope[keras]\".",
                               501, "keras_not_installed") from None
    if keras.backend.backend() != "torch":
        raise ModelFileRefused(f"Keras runs on its {keras.backend.backend()} backend here; ConvScope converts "
                               ".keras models on the torch backend (set KERAS_BACKEND=torch).", 501,
                               "keras_not_installed")
    return keras


def export_onnx(source: Path, limits: GraphLimits) -> onnx.ModelProto:
    """The ONNX graph Keras exports for the model in ``source`` (checked with :func:`check_size`)."""
    check_archive(source, limits)
    keras = keras_module()
    import numpy as np

    try:
        model = keras.saving.load_model(source, compile=False, safe_mode=True)
    except Exception as exc:
        raise ModelFileRefused(f"Keras could not load the model ({type(exc).__name__}: "
                               f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}).",
                               422, "corrupt_model") from None
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1:
        raise ModelFileRefused(f"The Keras model has {len(inputs)} inputs; ConvScope shows models with exactly one "
                               "image input.")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4 or any(d is None for d in shape[1:]):
        raise ModelFileRefused(f"The Keras model's input has shape {shape}; an image model takes "
                               "(batch, height, width, channels) with a fixed size.")
    model(np.zeros((1, *shape[1:]), dtype="float32"))  # Keras exports only a model that has been called
    with tempfile.TemporaryDirectory(prefix="convscope-keras-") as folder:
        path = Path(folder) / "model.onnx"
        try:
            # The tracer warns about every shape it turns into a constant; the graph is checked afterwards.
            # (Run at start-up or in an upload's own process: no request thread shares this filter.)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.export(str(path), format="onnx", verbose=False)
        except Exception as exc:
            raise ModelFileRefused(f"Keras could not export the model to ONNX ({type(exc).__name__}: "
                                   f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}).") from None
        graph = onnx.load(str(path))
    check_size(graph, limits)
    return graph
