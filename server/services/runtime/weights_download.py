"""Downloads of trained torchvision weights, one background job per model, with progress to poll."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from models.registry import HubWeights, WeightsError
from server.errors import ApiError
from server.services.runtime.download_errors import describe_failure
from server.services.runtime.model_runtime import ModelRuntime


@dataclass
class DownloadJob:
    model_id: str
    state: str = "running"  # running | done | failed
    downloaded: int = 0
    total: int | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"model": self.model_id, "state": self.state, "downloaded": self.downloaded, "total": self.total,
                "error": self.error}


class WeightsDownloads:
    def __init__(self, runtime: ModelRuntime) -> None:
        self.runtime = runtime
        self._jobs: dict[str, DownloadJob] = {}
        self._lock = threading.Lock()

    def start(self, model_id: str) -> DownloadJob:
        entry = self.runtime.entry(model_id)
        source = entry.weights
        if not isinstance(source, HubWeights):
            raise ApiError(409, "not_downloadable", f"{entry.id}'s weights are bundled with ConvScope; nothing to download.")
        with self._lock:
            job = self._jobs.get(entry.id)
            if job is not None and job.state == "running":
                return job
            job = DownloadJob(entry.id)
            self._jobs[entry.id] = job
        threading.Thread(target=self._run, args=(job, source), name=f"download-{entry.id}", daemon=True).start()
        return job

    def _run(self, job: DownloadJob, source: HubWeights) -> None:
        def progress(done: int, total: int | None) -> None:
            job.downloaded, job.total = done, total

        try:
            if not source.cached_path.is_file():
                source.download(progress)
            source.load_state_dict()  # verifies the hash and that torch can read it
            job.state = "done"
            self.runtime.forget_failure(job.model_id)
        except WeightsError as exc:
            job.state, job.error = "failed", describe_failure(exc, source, job.model_id)

    def get(self, model_id: str) -> DownloadJob:
        entry = self.runtime.entry(model_id)
        with self._lock:
            job = self._jobs.get(entry.id)
        if job is None:
            raise ApiError(404, "download_not_started", f"No download of {entry.id}'s weights has been started.")
        return job
