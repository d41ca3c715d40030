"""Live mode, one frame: decode, one forward pass (with the chosen layer's maps and, for the CAM methods,
the top-1 class's map from one backward to its layer) and the answer message.

The per-client side (latest frame wins, admission per session, the hub of open sessions) is in
:mod:`server.services.live.hub`; the protocol is documented in ``server/routers/live.py``.
"""

from __future__ import annotations

import base64
import io
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from server.errors import ApiError
from server.services.experiments.adversarial import PixelModel
from server.services.experiments.occlusion_probe import Patch, pasted
from server.services.feature_maps.activations import selectable_layers
from server.services.images.decode import decode_image
from server.services.rendering import atlas
from server.services.rendering.colormaps import apply_colormap, colormap_stops
from server.services.runtime.architecture_catalog import ArchitectureCatalog
from server.services.runtime.hooks import CapturedLayer, LayerRecorder, forward_hooks
from server.services.runtime.inputs import input_picture
from server.services.runtime.model_runtime import LoadedModel
from server.services.runtime.outputs import predictions_from_logits
from server.services.saliency.base import (
    BaseCAM,
    CamContext,
    SaliencyMethod,
    TopK,
    class_gradients,
    resolve_targets,
    spatial_activation,
)
from server.services.saliency.layer_choice import default_layer
from server.services.saliency.layer_choice import saliency_layer as resolve_saliency_layer
from server.services.saliency.methods import get_method
from server.services.work.scheduler import Admit

# CAM methods whose cost is one forward pass plus (at most) one backward to the target layer.
LIVE_METHODS = ("gradcam", "gradcampp", "xgradcam", "layercam", "eigencam")
TOP_K = 5
SALIENCY_COLORMAP = "viridis"
SALIENCY_OPACITY = 0.55
INPUT_PICTURE_MAX_PIXELS = 64 * 64  # the model's input picture is sent along for small inputs only
JPEG_QUALITY = 85

# Admission of one frame's computation, given the work's label ("live/<model>/<method or maps>"): a
# context manager holding a slot of the app's model-work pool for the block.


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
    # resolved once when the client connects (the frames only look them up here)
    modules: dict[str, torch.nn.Module] = field(default_factory=dict, compare=False, repr=False)
    saliency: SaliencyMethod | None = field(default=None, compare=False, repr=False)

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
    name = layer or default_layer(loaded.entry)
    modules = {name: loaded.layer(name)}  # 404 unknown_layer when there is no such module at all
    if name not in shapes:
        raise ApiError(422, "layer_has_no_feature_map",
                       f"Layer {name!r} of {loaded.entry.id} does not output a feature map or vector.")
    cam_layer = None
    saliency = None
    if method:
        saliency = get_method(method)  # 422 unknown_method for names that are no method at all
        if method not in LIVE_METHODS:
            raise ApiError(422, "method_not_live",
                           f"{method} costs more than one forward and backward pass per frame; live mode offers "
                           f"{', '.join(LIVE_METHODS)}. The Saliency tab computes {method} for a captured frame.")
        cam = resolve_saliency_layer(loaded, saliency_layer)  # 404 unknown_layer
        cam_layer = cam.name
        modules[cam_layer] = cam.module
        if len(shapes.get(cam_layer, ())) != 3:
            raise ApiError(422, "layer_not_spatial",
                           f"{method} needs a layer whose output is channels × height × width; "
                           f"{cam_layer!r} is not one.")
    return LiveConfig(loaded, name, shapes[name], method or None, cam_layer, modules, saliency)


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
    recorded = LayerRecorder()  # a copy: later in-place operations (ReLU(inplace=True), residual +=) must not change it
    hooks: list[tuple[torch.nn.Module, Any]] = [
        (config.modules[config.layer], recorded.hook(config.layer, keep="copy", dims=(2, 4)))]
    saliency = config.saliency
    captured = CapturedLayer()
    if saliency is not None:
        assert isinstance(saliency, BaseCAM) and config.saliency_layer is not None
        hooks.append((config.modules[config.saliency_layer], captured.hook))
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
    out = recorded.outputs.get(config.layer)
    result = ForwardResult(logits.detach().float().cpu()[0], None if out is None else out.numpy())
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


def run_frame(config: LiveConfig, tensor: torch.Tensor, limits: LiveLimits, admit: Admit,
              patch: Patch | None = None) -> tuple[dict[str, Any], FrameTimes]:
    """The model pass (holding an admission slot) and the answer's pictures for a prepared frame; with
    ``patch``, the frame with the patch pasted as the occlusion probe pastes it (the answer's input picture,
    sent then whatever the input's size, shows it, and ``patch`` says where it went, clipped)."""
    times = FrameTimes()
    start = time.perf_counter()
    if patch is not None:
        tensor = pasted(PixelModel(config.loaded), tensor, patch)
    with admit(config.label, "cheap"):
        result = forward(config, tensor)
    computed = time.perf_counter()
    answer = encode_answer(config, tensor, result, limits)
    if patch is not None:
        height, width = int(tensor.shape[-2]), int(tensor.shape[-1])
        top, left, bottom, right = patch.box(height, width)
        # as the occlusion probe states a patch: clipped to the input
        answer["patch"] = {"y": top, "x": left, "height": bottom - top, "width": right - left, "fill": patch.fill}
        answer.setdefault("input", _picture_url(input_picture(config.loaded, tensor)))
    times.model_ms = (computed - start) * 1000
    times.encode_ms = (time.perf_counter() - computed) * 1000
    return answer, times


def compute_frame(config: LiveConfig, data: bytes, limits: LiveLimits, admit: Admit,
                  patch: Patch | None = None) -> tuple[dict[str, Any], FrameTimes]:
    """One frame start to end in the calling thread; ApiErrors for bad frames and overload."""
    tensor, decode_ms = prepare_frame(config, data, limits)
    answer, times = run_frame(config, tensor, limits, admit, patch)
    times.decode_ms = decode_ms
    return answer, times
