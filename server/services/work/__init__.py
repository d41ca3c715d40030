"""Admitting work: the cheap and heavy pools (scheduler, limiter), cancellation, background jobs, disk budgets."""

from server.services.work.background_jobs import BackgroundJobs
from server.services.work.cancel import cancel_all
from server.services.work.limiter import WorkLimiter
from server.services.work.scheduler import Admit, Scheduler, cancel_on_signals

__all__ = ["Admit", "BackgroundJobs", "Scheduler", "WorkLimiter", "cancel_all", "cancel_on_signals"]
