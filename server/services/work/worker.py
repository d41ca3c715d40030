"""``convscope worker``: an RQ worker for ConvScope's background jobs (see :mod:`server.services.work.job_queue`).

Each job runs in a child process of the worker (RQ's "work horse"), so a job that dies takes only itself
down and is seen at once; the worker process itself holds only the settings and the model registry, and
each job builds the model it needs (a second or less for the bundled and torchvision models; feature
visualisations and dataset scans take many seconds). With ``--device cuda`` the child initialises CUDA
itself, so the forking stays safe.
"""

from __future__ import annotations

import logging
import os
import socket

from server.services.work.job_queue import QUEUE_NAME, WorkerContext, set_worker_context
from server.settings import Settings

log = logging.getLogger("convscope.jobs")


def _worker_class() -> type:
    from rq import Worker, worker_registration

    class ListedWorker(Worker):
        """An RQ worker that lists itself again at each heartbeat (before each wait for a job, and while a job
        runs): a Redis restarted without persistence has forgotten it, and replicas would say no worker listens
        (``/api/training/runs`` ``ready``) while it takes jobs."""

        def heartbeat(self, timeout: int | None = None, pipeline: object = None) -> None:
            super().heartbeat(timeout, pipeline)
            worker_registration.register(self, pipeline)

    return ListedWorker


def run_worker(settings: Settings, queues: list[str] | None = None, burst: bool = False) -> int:
    import redis
    from rq import Queue

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    set_worker_context(WorkerContext.from_settings(settings))
    connection = redis.Redis.from_url(settings.redis_url or "", socket_connect_timeout=5, health_check_interval=30)
    names = queues or [QUEUE_NAME]
    worker = _worker_class()([Queue(name, connection=connection) for name in names], connection=connection,
                    name=f"convscope-{socket.gethostname()}-{os.getpid()}", job_monitoring_interval=5)
    print(f"ConvScope worker {worker.name} takes jobs from {', '.join(names)}", flush=True)
    worker.work(burst=burst, with_scheduler=False, logging_level="WARNING")
    return 0
