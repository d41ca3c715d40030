"""Live mode: frames from a webcam (or the drawing pad) through a model in real time.

One :class:`LiveSession` per connected client. The client sends image frames (JPEG or PNG bytes); the
session answers each frame it computes with one message: the top-5 predictions, the chosen layer's
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

import base64
import io
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from typing import Any

import anyio.to_thread
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from server.errors import ApiError
from server.services import atlas, cancel
from server.services.activations import selectable_layers
from server.services.architecture import ArchitectureCatalog
from server.services.colormaps import apply_colormap, colormap_stops
from server.services.hooks import CapturedLayer, forward_hooks
from server.services.image_decode import decode_image
from server.services.model_inputs import input_picture
from server.services.model_runtime import LoadedModel, ModelRuntime
from server.services.predictions import predictions_from_logits
from server.services.saliency.base import (
    BaseCAM,
    CamContext,
    TopK,
    class_gradients,
    resolve_targets,
    spatial_activation,
)
from server.services.saliency.methods import get_method

# CAM methods whose cost is one forward pass plus (at most) one backward to the target layer.
LIVE_METHODS = ("gradcam", "gradcampp", "xgradcam", "layercam", "eigencam")
TOP_K = 5
SALIENCY_COLORMAP = "viridis"
SALIENCY_OPACITY = 0.55
INPUT_PICTURE_MAX_PIXELS = 64 * 64  # the model's input picture is sent along for small inputs only
JPEG_QUALITY = 85

# Admission of one frame's computation, given the work's label ("live/<model>/<method or maps>"): a
# context manager holding a slot of the app's model-work pool for the block.
Admit = Callable[[str], AbstractContextManager[Any]]


@dataclass(frozen=True)
class LiveLimits:
    """Bounds of live mode (all from ``Settings``)."""

    max_frame_bytes: int
    max_frame_pixels: int
    atlas_max_pixels: int
    idle_timeout_s: float


@dataclass(frozen=True)
class LiveConfig:
    """What one session computes for every frame, resolved and validated when the client connects."""

    loaded: LoadedModel
    layer: str
    layer_shape: tuple[int, ...]
    method: str | None
    saliency_layer: str | None

    @property
    def label(self) -> str:
        """What admission control calls this work."""
        return f"live/{self.loaded.entry.id}/{self.method or 'maps'}"

    def describe(self, limits: LiveLimits) -> dict[str, Any]:
        return {
            "model": self.loaded.entry.id,
            "weights_used": self.loaded.variant,
            "input": {"channels": self.loaded.entry.input.channels, "height": self.loaded.entry.input.height,
                      "width": self.loaded.entry.input.width},
            "layer": self.layer,
            "layer_shape": list(self.layer_shape),
            "method": self.method,
            "saliency_layer": self.saliency_layer,
            "top_k": TOP_K,
            "live_methods": [{"name": name, "title": get_method(name).title} for name in LIVE_METHODS],
            "limits": {"max_frame_bytes": limits.max_frame_bytes, "max_frame_pixels": limits.max_frame_pixels},
        }


def resolve_config(loaded: LoadedModel, architectures: ArchitectureCatalog, layer: str | None,
                   method: str | None, saliency_layer: str | None) -> LiveConfig:
    """Validate the query of a live connection (ApiErrors as the HTTP endpoints raise them)."""
    rows = selectable_layers(architectures.get(loaded.entry)["layers"])
    shapes = {row["name"]: tuple(row["output_shape"]) for row in rows}
    name = layer or loaded.entry.target_layer
    if name not in shapes:
        loaded.layer(name)  # 404 unknown_layer when there is no such module at all
        raise ApiError(422, "layer_has_no_feature_map",
                       f"Layer {name!r} of {loaded.entry.id} does not output a feature map or vector.")
    cam_layer = None
    if method:
        if method not in LIVE_METHODS:
            get_method(method)  # 422 unknown_method for names that are no method at all
            raise ApiError(422, "method_not_live",
                           f"{method} costs more than one forward and backward pass per frame; live mode offers "
                           f"{', '.join(LIVE_METHODS)}. The Saliency tab computes {method} for a captured frame.")
        cam_layer = saliency_layer or loaded.entry.target_layer
        loaded.layer(cam_layer)
        if len(shapes.get(cam_layer, ())) != 3:
            raise ApiError(422, "layer_not_spatial",
                           f"{method} needs a layer whose output is channels × height × width; "
                           f"{cam_layer!r} is not one.")
    return LiveConfig(loaded, name, shapes[name], method or None, cam_layer)


# --- one frame ---------------------------------------------------------------------------------------

@dataclass
class FrameTimes:
    decode_ms: float = 0.0
    model_ms: float = 0.0
    encode_ms: float = 0.0

    def as_json(self) -> dict[str, float]:
        return {"decode_ms": round(self.decode_ms, 2), "model_ms": round(self.model_ms, 2),
                "encode_ms": round(self.encode_ms, 2)}


@dataclass
class ForwardResult:
    """What one forward (and optional backward) pass gave: logits, the layer's output, the saliency map."""

    logits: torch.Tensor  # num_classes, float32, CPU
    layer_output: np.ndarray | None  # C×H×W or F, float32
    saliency: dict[str, Any] | None = None  # target, values H×W in [0, 1], raw range


def frame_tensor(config: LiveConfig, data: bytes, limits: LiveLimits) -> torch.Tensor:
    """Decode a frame exactly as an upload is decoded and preprocess it for the model (C×H×W, CPU)."""
    if len(data) > limits.max_frame_bytes:
        raise ApiError(413, "frame_too_large",
                       f"The frame has {len(data):,} bytes; live frames may have at most {limits.max_frame_bytes:,}.")
    image = decode_image(data, limits.max_frame_pixels)
    return config.loaded.preprocess(image).contiguous()


def forward(config: LiveConfig, tensor: torch.Tensor) -> ForwardResult:
    """One pass through the model: logits, the chosen layer's output and (CAM methods) the top-1 map."""
    loaded = config.loaded
    batch = tensor.unsqueeze(0).to(loaded.device)
    recorded: dict[str, np.ndarray] = {}

    def record(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.dim() in (2, 4):
            # a copy: later in-place operations (ReLU(inplace=True), residual +=) must not change it
            recorded["out"] = output[0].detach().to("cpu", torch.float32, copy=True).numpy()

    hooks: list[tuple[torch.nn.Module, Any]] = [(loaded.layer(config.layer), record)]
    saliency = get_method(config.method) if config.method else None
    captured = CapturedLayer()
    if saliency is not None:
        assert isinstance(saliency, BaseCAM) and config.saliency_layer is not None
        hooks.append((loaded.layer(config.saliency_layer), captured.hook))
    with forward_hooks(loaded, hooks):
        if saliency is None:
            with torch.inference_mode():
                logits = loaded.module(batch)
        else:
            # grad mode matters only from the captured leaf on: the parameters are frozen
            with torch.enable_grad():
                logits = loaded.module(batch)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != 1:
        raise ApiError(422, "unsupported_model_output", f"{loaded.entry.id}'s output is not one row of class scores.")
    result = ForwardResult(logits.detach().float().cpu()[0], recorded.get("out"))
    if saliency is not None:
        result.saliency = _cam(config, saliency, captured, logits, batch)
    return result


def _cam(config: LiveConfig, method: BaseCAM, captured: CapturedLayer, logits: torch.Tensor,
         batch: torch.Tensor) -> dict[str, Any]:
    """The top-1 class's map from the leaf captured in the forward pass (the saliency module's own steps)."""
    assert config.saliency_layer is not None
    activation = spatial_activation(captured.activation, captured.shapes, config.saliency_layer, method.title)
    targets = resolve_targets(logits.detach(), TopK(1))
    gradients = None
    if method.uses_gradients:
        with torch.enable_grad():
            gradients = class_gradients(logits, activation, targets)
    ctx = CamContext(config.loaded, batch, activation.detach()[0], gradients, targets, None)
    raw = method.to_raw(method.cam(ctx)).detach().float().cpu()
    size = (int(batch.shape[-2]), int(batch.shape[-1]))
    (scaled,) = method.scale(raw, size, method.geometry(config.loaded, config.saliency_layer))
    return {"target": targets[0], "values": scaled.values.numpy(), "low": float(scaled.low),
            "high": float(scaled.high)}


def compact_atlas(output: np.ndarray, max_pixels: int) -> tuple[bytes, dict[str, Any]]:
    """The layer's atlas as a palette PNG with its legend; tiles are averaged down to fit ``max_pixels``.

    Colour ranges come from the full-resolution output, so the legend states the layer's true values;
    averaging keeps every tile's values inside that range.
    """
    spec = atlas.layout(output, "layer", "auto")
    maps = atlas.as_channels(output)
    c, h, w = maps.shape
    factor = max(1, math.ceil(math.sqrt(c * h * w / max(1, max_pixels))))
    if factor > 1 and (h > 1 or w > 1):
        th, tw = max(1, math.ceil(h / factor)), max(1, math.ceil(w / factor))
        pooled = F.adaptive_avg_pool2d(torch.from_numpy(np.ascontiguousarray(maps)), (th, tw)).numpy()
        maps = pooled
        spec = replace(spec, tile_height=th, tile_width=tw)
    else:
        factor = 1
    png = atlas.atlas_png(maps, spec)
    described = spec.as_json()
    described["downsampled"] = factor
    described["channel_shape"] = [h, w]
    return png, described


def _data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _picture_url(picture: Image.Image) -> str:
    buf = io.BytesIO()
    if picture.mode == "L" or picture.width * picture.height <= INPUT_PICTURE_MAX_PIXELS:
        picture.save(buf, format="PNG", compress_level=1)
        return _data_url("image/png", buf.getvalue())
    picture.save(buf, format="JPEG", quality=JPEG_QUALITY)  # a photo blended with a heat map: JPEG suits it
    return _data_url("image/jpeg", buf.getvalue())


def saliency_overlay(values: np.ndarray, picture: Image.Image) -> Image.Image:
    """The map (H×W in [0, 1]) colour-mapped and blended over what the model sees, as the Saliency tab shows."""
    heat = apply_colormap(values, SALIENCY_COLORMAP).astype(np.float32)
    base = picture.convert("RGB")
    if base.size != (values.shape[1], values.shape[0]):
        base = base.resize((values.shape[1], values.shape[0]), Image.BILINEAR)
    blended = (1.0 - SALIENCY_OPACITY) * np.asarray(base, dtype=np.float32) + SALIENCY_OPACITY * heat
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8), mode="RGB")


def encode_answer(config: LiveConfig, tensor: torch.Tensor, result: ForwardResult, limits: LiveLimits) -> dict[str, Any]:
    """The JSON-ready answer for one frame (without the frame counters and timings)."""
    loaded = config.loaded
    answer: dict[str, Any] = {
        "predictions": predictions_from_logits(loaded, result.logits, TOP_K),
        "weights_used": loaded.variant,
    }
    layer: dict[str, Any] = {"name": config.layer}
    if result.layer_output is not None:
        png, described = compact_atlas(result.layer_output, limits.atlas_max_pixels)
        layer.update(shape=list(result.layer_output.shape), atlas=_data_url("image/png", png), **described)
    else:
        layer["shape"] = None
        layer["note"] = f"Layer {config.layer!r} did not run in this forward pass."
    answer["layer"] = layer
    picture = None
    if tensor.shape[-1] * tensor.shape[-2] <= INPUT_PICTURE_MAX_PIXELS:
        picture = input_picture(loaded, tensor)
        answer["input"] = _picture_url(picture)
    if result.saliency is not None:
        sal = result.saliency
        picture = picture or input_picture(loaded, tensor)
        labels = loaded.entry.categories
        target = int(sal["target"])
        probs = torch.softmax(result.logits, dim=-1)
        answer["saliency"] = {
            "method": config.method,
            "layer": config.saliency_layer,
            "target": target,
            "label": labels[target] if target < len(labels) else str(target),
            "probability": float(probs[target]),
            "overlay": _picture_url(saliency_overlay(sal["values"], picture)),
            "opacity": SALIENCY_OPACITY,
            "colormap": SALIENCY_COLORMAP,
            "stops": colormap_stops(SALIENCY_COLORMAP, atlas.LEGEND_STOPS),
            "raw_range": [sal["low"], sal["high"]],
        }
    return answer


def prepare_frame(config: LiveConfig, data: bytes, limits: LiveLimits) -> tuple[torch.Tensor, float]:
    """Decode and preprocess one frame (a worker thread's job): (the model's input, milliseconds taken)."""
    start = time.perf_counter()
    tensor = frame_tensor(config, data, limits)
    return tensor, (time.perf_counter() - start) * 1000


def run_frame(config: LiveConfig, tensor: torch.Tensor, limits: LiveLimits, admit: Admit) -> tuple[dict[str, Any], FrameTimes]:
    """The model pass (holding an admission slot) and the answer's pictures for a prepared frame."""
    times = FrameTimes()
    start = time.perf_counter()
    with admit(config.label):
        result = forward(config, tensor)
    computed = time.perf_counter()
    answer = encode_answer(config, tensor, result, limits)
    times.model_ms = (computed - start) * 1000
    times.encode_ms = (time.perf_counter() - computed) * 1000
    return answer, times


def compute_frame(config: LiveConfig, data: bytes, limits: LiveLimits, admit: Admit) -> tuple[dict[str, Any], FrameTimes]:
    """One frame start to end in the calling thread; ApiErrors for bad frames and overload."""
    tensor, decode_ms = prepare_frame(config, data, limits)
    answer, times = run_frame(config, tensor, limits, admit)
    times.decode_ms = decode_ms
    return answer, times


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

    def __init__(self, config: LiveConfig, limits: LiveLimits, admit: Admit, client: str = "local") -> None:
        self.config = config
        self.limits = limits
        self.admit = admit
        self.client = client  # who admission control sees: one live socket is one client
        self.token = cancel.CancelToken()  # set when the socket closes: a frame waiting for a slot gives up
        self.slot = FrameSlot()
        self.stats = SessionStats()

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
                self.stats.errors += 1
                await send(_error(400, "binary_frames_expected",
                                  "Send each frame as a binary message holding JPEG or PNG bytes."))
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
            return run_frame(self.config, tensor, self.limits, self.admit)

    async def _send_error(self, send: Send, err: ApiError, frame: Frame, replaced: int) -> None:
        self.stats.errors += 1
        message = _error(err.status, err.code, err.message)
        if "Retry-After" in err.headers:
            message["error"]["retry_after_s"] = float(err.headers["Retry-After"])
        await send({**message, "frame": frame.number, "dropped": replaced})


def _error(status: int, code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


# --- the hub: sessions of the whole app --------------------------------------------------------------

def origin_allowed(origin: str | None, host: str | None, allowed: list[str]) -> bool:
    """Whether a browser page from ``origin`` may open a live socket: the page's own origin or a configured
    CORS origin. Clients that send no Origin (scripts, not browsers) are allowed, as over HTTP."""
    if not origin:
        return True
    if origin in allowed:
        return True
    netloc = origin.split("://", 1)[-1].rstrip("/")
    return bool(host) and netloc == host


class LiveHub:
    """Every open live session; refuses more than ``max_clients`` at once. Made in the app's lifespan."""

    def __init__(self, runtime: ModelRuntime, architectures: ArchitectureCatalog, limits: LiveLimits, admit: Admit,
                 max_clients: int, allowed_origins: list[str] | None = None) -> None:
        self.runtime = runtime
        self.allowed_origins = list(allowed_origins or [])
        self.architectures = architectures
        self.limits = limits
        self.admit = admit
        self.max_clients = max(1, max_clients)
        self._sessions: set[LiveSession] = set()
        self._lock = threading.Lock()
        self._opened = 0
        self.refused = 0

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        return origin_allowed(origin, host, self.allowed_origins)

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
            live = LiveSession(config, self.limits, self.admit, f"{peer}/live-{self._opened}")
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
