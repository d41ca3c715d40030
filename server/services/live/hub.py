"""Live mode: frames from a webcam (or the drawing pad) through a model in real time.

One :class:`LiveSession` per connected client; the work on one frame is in :mod:`server.services.live.frame`.
The client sends image frames (JPEG or PNG bytes); the session answers each frame it computes with one message: the top-5 predictions, the chosen layer's
feature maps as a compact atlas, and — when a saliency method was asked for — the top-1 class's
overlay. The protocol is documented in ``server/routers/live.py``.

Latest frame wins: a session runs one frame through the model at a time, decodes the next one meanwhile,
and keeps at most ONE more frame waiting undecoded; a frame that arrives while another waits replaces it
(the replaced ones are counted in the answer's ``dropped``). Nothing is queued without bound, and a slow
model simply answers fewer frames per second.

Cost per frame: one forward pass. The feature-map layer is recorded by a forward hook, and for the CAM
methods the target layer is captured as an autograd leaf in that same pass, so Grad-CAM adds only a
backward from the top-1 score to that layer (no parameter gradients). Methods that need more than that
(Score-CAM, occlusion, SmoothGrad, …) are refused for live use: the Saliency tab computes them.

Admission: every frame's computation holds one slot of the app's work limiter (as an HTTP request
would), and a session computes one frame at a time, so a live client counts as one client. At most
``max_live_clients`` sessions are open at once. Nothing is stored: frames live only while computed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import torch

from server.errors import ApiError
from server.services.experiments.occlusion_probe import Patch, parse_patch
from server.services.experiments.params import check_patches
from server.services.live.frame import (
    Admit,
    FrameTimes,
    LiveConfig,
    LiveLimits,
    prepare_frame,
    resolve_config,
    run_frame,
)
from server.services.runtime.architecture_catalog import ArchitectureCatalog
from server.services.runtime.model_runtime import ModelRuntime
from server.services.work import cancel
from server.services.work.clients import LOCAL, ClientId

MAX_TEXT_CHARS = 1024  # a patch message is under 100 characters; longer text is refused unread (not parsed)

# --- the session: latest frame wins --------------------------------------------------------------------

@dataclass
class Frame:
    number: int  # 1-based, per session, in the order the frames arrived
    data: bytes
    received: float  # time.monotonic()


@dataclass
class Prepared:
    """A decoded frame on its way to the model."""

    frame: Frame
    replaced: int  # frames this one replaced while it waited
    tensor: torch.Tensor
    decode_ms: float


class FrameSlot:
    """At most one frame waiting to be computed: a newer frame replaces the waiting one."""

    def __init__(self) -> None:
        self._frame: Frame | None = None
        self._ready = anyio.Event()
        self.replaced = 0  # frames replaced since the last take()

    def put(self, frame: Frame) -> None:
        if self._frame is not None:
            self.replaced += 1
        self._frame = frame
        self._ready.set()

    async def take(self) -> tuple[Frame, int]:
        """The waiting frame and how many frames it replaced."""
        await self._ready.wait()
        frame, replaced = self._frame, self.replaced
        self._frame, self.replaced = None, 0
        self._ready = anyio.Event()
        assert frame is not None
        return frame, replaced

    @property
    def waiting(self) -> bool:
        return self._frame is not None


@dataclass
class SessionStats:
    received: int = 0
    decoded: int = 0
    answered: int = 0
    dropped: int = 0
    errors: int = 0
    computing: bool = False


Receive = Callable[[], Awaitable[bytes | str | None]]  # None: the client has gone
Send = Callable[[dict[str, Any]], Awaitable[None]]


class LiveSession:
    """One client's live stream: a receiver that files frames into the slot and a worker that computes."""

    def __init__(self, config: LiveConfig, limits: LiveLimits, admit: Admit, client: ClientId = LOCAL) -> None:
        self.config = config
        self.limits = limits
        self.admit = admit
        self.client = client  # who admission control sees: one live socket is one client
        self.token = cancel.CancelToken()  # set when the socket closes: a frame waiting for a slot gives up
        self.slot = FrameSlot()
        self.stats = SessionStats()
        self.patch: Patch | None = None  # the occlusion patch pasted on every frame, set by a text message

    def _patch(self, text: str) -> Patch | None:
        if len(text) > MAX_TEXT_CHARS:  # parsing megabytes of JSON would hold the event loop for seconds
            raise ApiError(413, "message_too_large", f"patch: a text message may have at most {MAX_TEXT_CHARS} "
                           f"characters; this one has {len(text):,}.")
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python's stack
            message = None
        patch = parse_patch(message)
        return check_patches(self.config.loaded, [patch], "patch")[0] if patch is not None else None

    async def run(self, receive: Receive, send: Send) -> None:
        """Serve the client until it disconnects (or stays silent past the idle timeout)."""
        await send({"ready": self.config.describe(self.limits)})
        # Two stages, so that decoding the next frame overlaps the model pass of this one: the decoder
        # hands each prepared frame over only when the model stage takes it (a zero-size buffer), so at
        # most one frame waits raw, one waits decoded, and one is in the model.
        handover, prepared = anyio.create_memory_object_stream[Prepared](0)
        async with handover, prepared, anyio.create_task_group() as tasks:  # the stages end before the streams
            tasks.start_soon(self._decode, handover, send)
            tasks.start_soon(self._compute, prepared, send)
            try:
                with cancel.live(self.token):  # a server shutting down cancels it too
                    await self._receive_frames(receive, send)
            finally:
                self.token.cancel()
                # A frame being decoded or computed finishes in its thread first (a worker thread cannot be
                # stopped; hooks and the limiter slot are released by its own finally blocks), then the
                # stages end.
                tasks.cancel_scope.cancel()

    async def _receive_frames(self, receive: Receive, send: Send) -> None:
        while True:
            with anyio.move_on_after(self.limits.idle_timeout_s) as idle:
                message = await receive()
            if idle.cancelled_caught:
                await send(_error(408, "idle_timeout", f"No frame for {self.limits.idle_timeout_s:g} s: "
                                  "the live connection is closed; reconnect to go on."))
                return
            if message is None:
                return
            if isinstance(message, str):
                try:
                    self.patch = self._patch(message)
                except ApiError as err:
                    self.stats.errors += 1
                    await send(_error(err.status, err.code, err.message))
                continue
            self.stats.received += 1
            frame = Frame(self.stats.received, message, time.monotonic())
            if len(message) > self.limits.max_frame_bytes:  # refused before it takes the slot
                self.stats.errors += 1
                await send({**_error(413, "frame_too_large", f"The frame has {len(message):,} bytes; live "
                                     f"frames may have at most {self.limits.max_frame_bytes:,}."),
                            "frame": frame.number})
                continue
            self.slot.put(frame)

    async def _decode(self, handover: Any, send: Send) -> None:
        while True:
            frame, replaced = await self.slot.take()
            self.stats.dropped += replaced
            try:
                tensor, decode_ms = await anyio.to_thread.run_sync(prepare_frame, self.config, frame.data, self.limits)
            except ApiError as err:
                await self._send_error(send, err, frame, replaced)
                continue
            self.stats.decoded += 1
            await handover.send(Prepared(frame, replaced, tensor, decode_ms))

    async def _compute(self, prepared: Any, send: Send) -> None:
        async for item in prepared:
            frame = item.frame
            self.stats.computing = True
            started = time.monotonic()
            try:
                answer, times = await anyio.to_thread.run_sync(self._run_frame, item.tensor)
            except ApiError as err:
                await self._send_error(send, err, frame, item.replaced)
                continue
            finally:
                self.stats.computing = False
            self.stats.answered += 1
            times.decode_ms = item.decode_ms
            timing = times.as_json()
            timing["queue_ms"] = round((started - frame.received) * 1000 - item.decode_ms, 2)
            timing["server_ms"] = round((time.monotonic() - frame.received) * 1000, 2)
            await send({"frame": frame.number, "dropped": item.replaced, **answer, "timing": timing})

    def _run_frame(self, tensor: torch.Tensor) -> tuple[dict[str, Any], FrameTimes]:
        with cancel.bound(self.token, self.client):  # admission control reads both from the context
            return run_frame(self.config, tensor, self.limits, self.admit, self.patch)

    async def _send_error(self, send: Send, err: ApiError, frame: Frame, replaced: int) -> None:
        self.stats.errors += 1
        message = _error(err.status, err.code, err.message)
        if "Retry-After" in err.headers:
            message["error"]["retry_after_s"] = float(err.headers["Retry-After"])
        await send({**message, "frame": frame.number, "dropped": replaced})


def _error(status: int, code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


# --- the hub: sessions of the whole app --------------------------------------------------------------

class LiveHub:
    """Every open live session; refuses more than ``max_clients`` at once. Made in the app's lifespan."""

    def __init__(self, runtime: ModelRuntime, architectures: ArchitectureCatalog, limits: LiveLimits, admit: Admit,
                 max_clients: int) -> None:
        self.runtime = runtime
        self.architectures = architectures
        self.limits = limits
        self.admit = admit
        self.max_clients = max(1, max_clients)
        self._sessions: set[LiveSession] = set()
        self._lock = threading.Lock()
        self._opened = 0
        self.refused = 0

    def configure(self, model: str, weights: str, layer: str | None, method: str | None,
                  saliency_layer: str | None) -> LiveConfig:
        """Load the model (can take seconds: call from a worker thread) and validate the query."""
        loaded = self.runtime.load(model, weights)
        return resolve_config(loaded, self.architectures, layer, method, saliency_layer)

    @contextmanager
    def session(self, config: LiveConfig, peer: str = "local") -> Iterator[LiveSession]:
        """A registered session for the block; ApiError 503 when ``max_clients`` are already live.

        ``peer``: the client's address. Each socket is its own client for admission control (two tabs on
        one laptop are two live clients, each with its fair share)."""
        with self._lock:
            self._opened += 1
            live = LiveSession(config, self.limits, self.admit, ClientId(peer, f"{peer}/live-{self._opened}"))
            if len(self._sessions) >= self.max_clients:
                self.refused += 1
                raise ApiError(503, "too_many_live_clients",
                               f"{self.max_clients} live clients are connected, the most this server takes; "
                               "try again in a moment.", {"Retry-After": "5"})
            self._sessions.add(live)
        try:
            yield live
        finally:
            with self._lock:
                self._sessions.discard(live)

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._sessions)

    def sessions(self) -> list[LiveSession]:
        with self._lock:
            return list(self._sessions)
