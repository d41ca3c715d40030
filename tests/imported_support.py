"""Helpers for the ONNX/Keras tests: exporters run quietly, a models file with one entry, onnxruntime."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.models_file import load_models_file
from models.registry import ModelEntry, ModelRegistry


def export_torch(model: nn.Module, example: torch.Tensor, path: Path, **options: object) -> Path:
    """``torch.onnx.export`` with ``options``; its many warnings are about the exporter, not the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (example,), str(path), **options)
    return path


def load_entry(folder: Path, kind: str, filename: str, extra: str = "", model_id: str = "m") -> ModelEntry:
    """Register one ``onnx``/``keras`` entry from a models file in ``folder`` into a fresh registry."""
    (folder / "models.toml").write_text(f'[[model]]\nid = "{model_id}"\n{kind} = "{filename}"\n{extra}\n')
    (entry,) = load_models_file(folder / "models.toml", ModelRegistry(), folder / "import-cache")
    return entry


def onnxruntime_logits(path: Path, batch: np.ndarray) -> np.ndarray:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # keep-initializers-as-inputs exports warn once per initializer
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


def convscope_outputs(entry: ModelEntry, batch: torch.Tensor) -> np.ndarray:
    """What ConvScope's module for ``entry`` (trained weights) gives for an N×C×H×W batch."""
    with torch.no_grad():
        return entry.build(trained=True)(batch).numpy()


def keras_module():  # noqa: ANN201 - the keras module on its torch backend
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    return keras
