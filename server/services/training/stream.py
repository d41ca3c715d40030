"""A run's event stream (Server-Sent Events): the whole run first (``snapshot``), then each event as the worker
sends it; a browser that reconnects with ``Last-Event-ID`` gets what it missed, or the whole run again when the
log no longer holds it. An open stream from the run's owner keeps the run alive (see ``grace_s``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from server.services.classroom.service import HEARTBEAT, sse_message
from server.services.training.run import Run
from server.services.training.runs import TrainingRuns

POLL_S = 0.1  # how often a stream looks for new events (the worker sends a point every 0.4 s)
RETRY_MS = 2000


async def run_events(runs: TrainingRuns, run: Run, client: str, last_event_id: int | None,
                     heartbeat_s: float, max_stream_s: float) -> AsyncIterator[bytes]:
    runs.attach(run, client)
    try:
        yield f"retry: {RETRY_MS}\n\n".encode()
        seq = last_event_id if last_event_id is not None else -1
        started = quiet = time.monotonic()
        while True:
            events = run.since(seq) if 0 <= seq <= run.seq else None  # an id from the future: the whole run
            if events is None:
                snapshot = run.as_json(full=True)
                seq = snapshot["seq"]
                yield sse_message("snapshot", snapshot, seq)
                events = run.since(seq) or []
            for number, event in events:
                yield sse_message(event["type"], event, number)
                seq = number
            now = time.monotonic()
            if events:
                quiet = now
            if not run.active and not run.since(seq):
                yield sse_message("end", {"state": run.state, "message": run.message})
                return
            if now - started > max_stream_s:
                return  # the browser reconnects with Last-Event-ID
            if now - quiet > heartbeat_s:
                yield HEARTBEAT
                quiet = now
            await asyncio.sleep(POLL_S)
    finally:
        runs.detach(run, client)
