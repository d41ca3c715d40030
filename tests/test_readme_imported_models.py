"""README's "ONNX and Keras files": the ONNX and the Keras route, three lines each, run as pasted (``convscope`` is
this checkout's CLI); each lists its model as ``local``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


def _routes() -> list[tuple[str, list[str]]]:
    """[(the Python line, the two shell lines)] for the ONNX route, then the Keras route."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("### ONNX and Keras files", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(python|bash)\n(.*?)```", section, flags=re.S)
    assert [lang for lang, _ in blocks] == ["python", "bash", "python", "bash"]
    routes = []
    for (_, python), (_, shell) in (blocks[0:2], blocks[2:4]):
        python_lines, shell_lines = python.strip().splitlines(), shell.strip().splitlines()
        assert len(python_lines) + len(shell_lines) == 3  # three lines each
        routes.append((python_lines[0], shell_lines))
    return routes


def _run_shell(lines: list[str], folder: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(folder / "cache"), "KERAS_BACKEND": "torch"}
    output = ""
    for line in lines:
        command = line.split("  #", 1)[0].strip().replace("convscope ", f"{sys.executable} -m server.cli ", 1)
        done = subprocess.run(["bash", "-c", command], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, (command, done.stderr[-2000:])
        output += done.stdout
    return output


def test_onnx_route(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (python_line, shell_lines), _ = _routes()
    from tests.readme_support import readme_example

    (tmp_path / "mynets.py").write_text(readme_example()["mynets.py"])  # the worked example's architecture
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mynets", raising=False)
    import mynets

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own warnings
        exec(python_line, {"torch": torch, "mynets": mynets})  # noqa: S102 - the README's line, as pasted
    listing = _run_shell(shell_lines, tmp_path)
    assert re.search(r"small-cnn-onnx\s+file\s+local", listing), listing


def test_keras_route(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    _, (python_line, shell_lines) = _routes()
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    monkeypatch.chdir(tmp_path)
    exec(python_line, {"model": model})  # noqa: S102 - the README's line, as pasted
    listing = _run_shell(shell_lines, tmp_path)
    assert re.search(r"digits\s+file\s+local", listing), listing
