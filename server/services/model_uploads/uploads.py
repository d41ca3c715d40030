"""Models dropped into the page: an ``.onnx`` or ``.keras`` file becomes a model anyone holding its id can use.

* The file is parsed and converted in a child process under CPU, memory and wall-clock limits
  (:mod:`server.services.model_uploads.convert_worker` in a
  :class:`~server.services.work.child_processes.ChildProcessPool`, as image uploads are decoded); the
  server itself only reads back the normalised graph the child wrote and checked.
* The model gets an unguessable id (128 random bits) and is registered in the app's registry with
  :meth:`ModelRegistry.register`, like every model. Every view works on it; ``GET /api/models`` lists it
  only to the address that uploaded it.
* Quotas: at most ``per_client`` models per client address (429) and a budget for the parameters of every
  upload together (413). A model no request has named for ``idle_s`` is dropped, with its loaded copies.
* On when the server listens on loopback only; off on a network address unless
  ``CONVSCOPE_ALLOW_MODEL_UPLOADS=1`` (403, saying so).
"""

from __future__ import annotations

import dataclasses
import json
import math
import secrets
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from models.imported.convert import ImportedModel, load_normalised
from models.imported.onnx_graph import ModelFileRefused
from models.models_file import imported_entry
from models.registry import ModelEntry
from server.errors import ApiError
from server.hosts import is_loopback
from server.services.images.decode_worker import PARENT_ENV
from server.services.runtime.model_runtime import ModelRuntime
from server.services.work.child_processes import ChildProcessPool

REPO_ROOT = Path(__file__).resolve().parents[3]
MAX_LABELS_BYTES = 1024 * 1024
# What a file that is not ONNX or Keras is, and why it is refused (checked on the bytes, not the name).
PICKLE_REASON = ("a pickle (a whole module saved with torch.save): unpickling runs code, so ConvScope never "
                 "loads one; export the model to ONNX (torch.onnx.export) or save a state_dict for a models file")
TORCHSCRIPT_REASON = ("a TorchScript archive: loading one runs its code, and its layers cannot be hooked; export "
                      "the model to ONNX with torch.onnx.export instead")
ENABLE_HINT = ("Uploading models is off because this server listens on a network address. Whoever runs it can "
               "turn it on: start it with CONVSCOPE_ALLOW_MODEL_UPLOADS=1 (or name the model in a models file).")


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 200 * 1024 * 1024
    per_client: int = 3
    budget_bytes: int = 1024 * 1024 * 1024
    idle_s: float = 3600.0
    cpu_seconds: float = 120.0
    memory_bytes: int = 3 * 1024 * 1024 * 1024
    wall_seconds: float = 240.0
    max_processes: int = 1
    max_nodes: int = 20_000
    max_tensor_bytes: int = 512 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings) -> UploadLimits:  # noqa: ANN001 - server.settings.Settings
        return cls(settings.max_model_upload_bytes, settings.max_uploaded_models_per_client,
                   settings.uploaded_models_budget_bytes, settings.uploaded_model_idle_s,
                   settings.model_convert_cpu_seconds, settings.model_convert_memory_bytes,
                   settings.model_convert_timeout_s, settings.max_model_convert_processes, settings.max_model_nodes,
                   settings.max_model_tensor_bytes)


def uploads_enabled(settings) -> bool:  # noqa: ANN001 - server.settings.Settings
    if settings.allow_model_uploads is not None:
        return bool(settings.allow_model_uploads)
    return is_loopback(settings.host)


@dataclass
class _Upload:
    owner: str
    nbytes: int
    created: float


class ModelUploads:
    def __init__(self, runtime: ModelRuntime, folder: Path, limits: UploadLimits, enabled: bool) -> None:
        self.runtime = runtime
        self.folder = folder
        self.limits = limits
        self.enabled = enabled
        self._pool = ChildProcessPool([sys.executable, "-m", "server.services.model_uploads.convert_worker"],
                                      limits.max_processes, limits.wall_seconds, "model converter", PARENT_ENV,
                                      env={"PYTHONPATH": str(REPO_ROOT), "KERAS_BACKEND": "torch"})
        self._uploads: dict[str, _Upload] = {}
        self._reserved: dict[str, int] = {}  # client → conversions in flight (they count toward the quota)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._pool.close()
        for model_id in list(self._uploads):
            self._drop(model_id)
        shutil.rmtree(self.folder, ignore_errors=True)

    # --- who sees what ---------------------------------------------------------------------------
    def visible(self, entries: list[ModelEntry], client: str) -> list[ModelEntry]:
        """``entries`` without the uploads of other clients (anyone holding an id can still use it)."""
        self.sweep()
        with self._lock:
            foreign = {i for i, upload in self._uploads.items() if upload.owner != client}
        return [entry for entry in entries if entry.id not in foreign]

    # --- adding -----------------------------------------------------------------------------------
    def check_enabled(self) -> None:
        if not self.enabled:
            raise ApiError(403, "model_uploads_off", ENABLE_HINT)

    def add(self, data: bytes, filename: str, labels_text: bytes | None, client: str) -> ModelEntry:
        """Convert ``data`` in a child process and register it; the entry, or an :class:`ApiError`."""
        self.check_enabled()
        self.sweep()
        kind = file_kind(data, filename)
        labels = _labels(labels_text)
        with self._lock:
            held = sum(1 for u in self._uploads.values() if u.owner == client) + self._reserved.get(client, 0)
            if held >= self.limits.per_client:
                now = time.monotonic()
                idle = [now - max(u.created, self.runtime.last_used.get(i, 0.0))
                        for i, u in self._uploads.items() if u.owner == client]
                wait = max(1, math.ceil(self.limits.idle_s - max(idle, default=0.0)))
                raise ApiError(429, "too_many_models", f"You have {held} uploaded models here, the most one "
                               "computer may have at once; an unused one is dropped after "
                               f"{self.limits.idle_s / 60:.0f} minutes.", {"Retry-After": str(wait)})
            self._reserved[client] = self._reserved.get(client, 0) + 1
        key = secrets.token_hex(16)
        try:
            return self._convert_and_register(key, kind, data, filename, labels, client)
        finally:
            with self._lock:
                self._reserved[client] -= 1
                if not self._reserved[client]:
                    del self._reserved[client]
            for suffix in (".onnx", ".json"):
                (self.folder / f"{key}{suffix}").unlink(missing_ok=True)

    def _convert_and_register(self, key: str, kind: str, data: bytes, filename: str, labels: list[str] | None,
                              client: str) -> ModelEntry:
        answer = self._convert(key, kind, data, filename)
        nbytes = int(answer["nbytes"]) * 2  # the converted template and one loaded copy
        with self._lock:
            used = sum(u.nbytes for u in self._uploads.values())
            if used + nbytes > self.limits.budget_bytes:
                raise ApiError(413, "models_memory_full", f"The model needs {nbytes / 2**20:,.0f} MB; uploaded models "
                               f"may use {self.limits.budget_bytes / 2**20:,.0f} MB on this server and "
                               f"{used / 2**20:,.0f} MB are in use. Try again when an unused one has been dropped.")
        graph = load_normalised(self.folder, key)
        if graph is None:
            raise ApiError(422, "model_unsupported", "The converted model could not be read back.")
        model_id = f"upload-{key}"
        name = _title(filename, kind)
        try:
            imported = ImportedModel.from_graph(graph, key, name)
        except ModelFileRefused as exc:
            raise ApiError(exc.status, exc.code, exc.message) from None
        spec = {"id": model_id, "title": name, **({"labels": labels} if labels else {})}
        entry = imported_entry(model_id, spec, imported, graph.metadata, dataset="your upload",
                               description=f"Uploaded {kind.upper() if kind == 'onnx' else 'Keras'} model, "
                                           "converted with onnx2torch.", labels_from=None, meta={"uploaded": kind})
        if entry.problem:
            raise ApiError(422, "model_unsupported", entry.problem)
        entry = self.runtime.registry.register(dataclasses.replace(entry, family="upload"))
        with self._lock:
            self._uploads[model_id] = _Upload(client, nbytes, time.monotonic())
        return entry

    def _convert(self, key: str, kind: str, data: bytes, filename: str) -> dict:
        self.folder.mkdir(parents=True, exist_ok=True)
        limits = self.limits
        job = {"kind": kind, "key": key, "name": _title(filename, kind), "folder": str(self.folder),
               "cpu_seconds": limits.cpu_seconds, "memory_bytes": limits.memory_bytes, "max_nodes": limits.max_nodes,
               "max_tensor_bytes": limits.max_tensor_bytes}
        result = self._pool.run(json.dumps(job).encode() + b"\n" + data)
        if result.returncode is None:
            raise ApiError(422, "model_too_costly", f"Converting the model took more than {limits.wall_seconds:g} s.")
        answer, _ = result.answer()
        if "ok" in answer and result.returncode == 0:
            return answer["ok"]
        if result.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
            raise ApiError(422, "model_too_costly", "Converting the model took more than "
                           f"{limits.cpu_seconds:g} s of CPU time.")
        raise ApiError(422, "model_too_costly", "The model converter stopped on this file (it needed more "
                       f"than the {limits.memory_bytes / 2**30:.0f} GB of memory a conversion may use, or the file is "
                       "damaged).")

    # --- dropping ---------------------------------------------------------------------------------
    def sweep(self) -> None:
        """Drop the uploads nobody used for ``idle_s``."""
        now = time.monotonic()
        with self._lock:
            idle = [i for i, u in self._uploads.items()
                    if now - max(u.created, self.runtime.last_used.get(i, 0.0)) > self.limits.idle_s]
        for model_id in idle:
            self._drop(model_id)

    def _drop(self, model_id: str) -> None:
        with self._lock:
            self._uploads.pop(model_id, None)
        self.runtime.drop(model_id)


def file_kind(data: bytes, filename: str) -> str:
    """``onnx`` or ``keras`` from the bytes (and the name where the bytes allow both); refusals say why."""
    if not data:
        raise ApiError(400, "empty_file", "The model file is empty.")
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise ApiError(415, "unsupported_model_format", f"The file is {PICKLE_REASON}.")
    if data[:4] == b"PK\x03\x04":  # a zip: Keras 3 archive, or TorchScript / torch.save (also zips)
        head = data[:64 * 1024]
        if b"constants.pkl" in head or b"/code/" in head:
            raise ApiError(415, "unsupported_model_format", f"The file is {TORCHSCRIPT_REASON}.")
        if b"data.pkl" in head:
            raise ApiError(415, "unsupported_model_format", f"The file is {PICKLE_REASON}.")
        return "keras"
    if filename.lower().endswith((".pt", ".pth", ".pkl", ".pickle", ".ckpt")):
        raise ApiError(415, "unsupported_model_format", f"The file ({Path(filename).suffix}) is {PICKLE_REASON}.")
    if filename.lower().endswith((".h5", ".hdf5")) or data[:8] == b"\x89HDF\r\n\x1a\n":
        raise ApiError(415, "unsupported_model_format", "The file is a Keras 2 HDF5 file; open it in Keras 3 and "
                       "save it as .keras (model.save('name.keras')).")
    return "onnx"  # ONNX has no magic number: the converter's parse decides


def _labels(text: bytes | None) -> list[str] | None:
    if not text:
        return None
    try:
        lines = text.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise ApiError(422, "bad_labels", "The labels file is not UTF-8 text (one label per line).") from None
    labels = [line.strip()[:200] for line in lines if line.strip()]
    return labels or None


def _title(filename: str, kind: str) -> str:
    stem = Path(filename.replace("\\", "/")).name.rsplit(".", 1)[0]
    stem = "".join(c for c in stem if c.isprintable())[:80].strip()
    return stem or ("Uploaded ONNX model" if kind == "onnx" else "Uploaded Keras model")
