"""The model converter's child process: one uploaded ``.onnx``/``.keras`` file in, a normalised graph out.

It imports torch, onnx, onnx2torch (and Keras when installed) while it waits as the spare worker, then sets
its own CPU-time and address-space limits (:func:`server.services.images.decode_worker.set_limits`) before
it reads the upload: a protobuf or zip bomb, a graph of 100,000 nodes or a 2 GB declared tensor is refused
by the checks of :mod:`models.imported` or stopped by the limits, here, never in the server.

Protocol (stdin → stdout): one JSON line (``kind``, ``key``, ``folder``, limits), then the file's bytes. The
answer is one JSON line: ``{"ok": {...}}`` after writing ``<key>.onnx`` + ``<key>.json`` into ``folder``
(see :func:`models.imported.convert.save_normalised`), or ``{"error": [status, code, message]}``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import torch  # noqa: E402  (imported ahead, while the worker waits as the spare)

from models.imported.convert import ImportedModel, keras_available, normalised_graph, save_normalised  # noqa: E402
from models.imported.onnx_graph import GraphLimits, ModelFileRefused  # noqa: E402
from server.services.images.decode_worker import die_with_server, set_limits  # noqa: E402

torch.set_num_threads(1)
keras_available()  # imports Keras (when installed) now, before the limits


def convert(job: dict, data: bytes) -> dict:
    folder = Path(job["folder"])
    source = folder / f"{job['key']}.upload.{job['kind']}"
    source.write_bytes(data)
    try:
        graph = normalised_graph(source, job["kind"], GraphLimits(job["max_nodes"], job["max_tensor_bytes"]),
                                 external_data=False)
        model = ImportedModel.from_graph(graph, job["key"], job["name"])
    finally:
        source.unlink(missing_ok=True)
    save_normalised(graph, folder, job["key"])
    image = graph.image
    return {"channels": image.channels, "height": image.height, "width": image.width, "nbytes": model.nbytes}


def _main() -> int:
    die_with_server()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    job = json.loads(stdin.readline())
    set_limits(job["cpu_seconds"], job["memory_bytes"])
    data = stdin.read()
    try:
        answer = {"ok": convert(job, data)}
    except ModelFileRefused as exc:
        answer = {"error": [exc.status, exc.code, exc.message]}
    except MemoryError:
        answer = {"error": [413, "model_too_large", "Converting the model needs more memory than an upload may use."]}
    except RecursionError:
        answer = {"error": [422, "corrupt_model", "The model file nests too deeply to be read."]}
    stdout.write(json.dumps(answer).encode() + b"\n")
    stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
