"""The trust checks the app serves: one :class:`ResultCache` for both, made in the lifespan."""

from __future__ import annotations

from typing import Any

from server.services.runtime.cache import ResultCache
from server.services.runtime.inputs import ModelInputs
from server.services.saliency.service import SaliencyMaps
from server.services.trust.deletion import DeletionCurves
from server.services.trust.sanity import SanityChecks
from server.services.work.background_jobs import Jobs
from server.services.work.scheduler import Admit


class TrustChecks:
    """``sanity``: model randomisation (background jobs); ``deletion``: deletion/insertion curves."""

    def __init__(self, inputs: ModelInputs, maps: SaliencyMaps, jobs: Jobs,
                 admit: Admit, *, budget_bytes: int,
                 max_steps: int, batch_size: int) -> None:
        self.cache: ResultCache[Any] = ResultCache("trust checks", budget_bytes)
        self.inputs = inputs
        self.sanity = SanityChecks(inputs, jobs, self.cache, admit, max_steps)
        self.deletion = DeletionCurves(inputs, maps, admit, self.cache, batch_size)
