"""Training runs in the page (issue 24): worker processes, the runs they make, their event streams."""

from server.services.training.runs import TrainingLimits, TrainingRuns
from server.services.training.stream import run_events

__all__ = ["TrainingLimits", "TrainingRuns", "run_events"]
