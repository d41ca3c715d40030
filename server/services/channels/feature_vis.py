"""What a channel looks for, by optimisation: an input image made to excite one channel (activation
maximisation, "feature visualisation").

The image is parameterised in the Fourier domain: learnable spectra whose frequencies are scaled by 1/f,
so that gradient steps change large, smooth structures as easily as fine ones (pixel parameterisations
drift into high-frequency noise). For colour models the three channels are decorrelated: the spectra
drive independent components that a fixed 3×3 matrix mixes into RGB — the square root of the colour
covariance of the offline photos (or of the Shapes images for 64×64 models), so the optimiser moves along
colour directions natural images vary in. A sigmoid keeps pixels in [0, 1]; the model's own
normalisation follows. Each step the picture is randomly shifted (jitter) and rescaled, so only patterns
that excite the channel wherever they sit survive. The objective is the channel's mean over positions
(a vector layer's unit value). Random numbers come from the seed alone; runs are cancellable between
steps, report their progress and are cached on disk as PNG plus a small JSON.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from server.errors import ApiError
from server.services.channels.examples import LONG_WORK
from server.services.runtime.cache import ResultCache
from server.services.runtime.hooks import LayerRecorder, forward_hooks, run_forward
from server.services.runtime.model_runtime import LoadedModel, ModelLayer
from server.services.work.background_jobs import Job, Jobs
from server.services.work.disk_budget import evict_oldest
from server.services.work.job_queue import SHAREABLE_FAMILIES, Task, WorkerContext
from server.services.work.scheduler import Admit


def fourier_scale(height: int, width: int, decay: float = 1.0) -> torch.Tensor:
    """1/f^decay per rfft2 frequency (the zero frequency gets the largest finite weight)."""
    fy = torch.fft.fftfreq(height)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    freq = torch.sqrt(fx * fx + fy * fy)
    return 1.0 / torch.clamp(freq, min=1.0 / max(height, width)) ** decay


def measure_colour_mixing(source: str, data_dir: str | None) -> tuple[tuple[float, ...], ...]:
    """The square root of the RGB covariance of natural images (rows = output colours), normalised so
    that its largest column has unit length; identity when no images are at hand."""
    pixels = _colour_samples(source, None if data_dir is None else Path(data_dir))
    if pixels is None or len(pixels) < 16:
        return ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    cov = np.cov(pixels.T)
    vals, vecs = np.linalg.eigh(cov)
    root = vecs @ np.diag(np.sqrt(np.clip(vals, 1e-8, None))) @ vecs.T
    root /= np.linalg.norm(root, axis=0).max()
    return tuple(tuple(float(v) for v in row) for row in root)


def _colour_samples(source: str, data_dir: Path | None) -> np.ndarray | None:
    rng = np.random.default_rng(0)
    if source == "shapes":
        from models.datasets import shapes

        images = shapes.generate(64, 12345).images.reshape(-1, 3).astype(np.float64) / 255.0
        return images[rng.choice(len(images), size=min(len(images), 20000), replace=False)]
    from server.services.images import samples

    files = samples._photo_files(samples._photos_dir(data_dir))
    chunks = []
    for path in files.values():
        with Image.open(path) as image:
            small = image.convert("RGB").resize((64, 64))
        chunks.append(np.asarray(small, dtype=np.float64).reshape(-1, 3) / 255.0)
    return np.concatenate(chunks) if chunks else None


def optimise(loaded: LoadedModel, layer: ModelLayer, channel: int, *, steps: int, seed: int, lr: float = 0.1,
             jitter: int = 4, scales: tuple[float, float] = (0.92, 1.08), mixing: tuple[tuple[float, ...], ...] | None = None,
             admit: Admit | None = None,
             progress: Callable[[int, float], None] | None = None) -> tuple[np.ndarray, float]:
    """The optimised picture (H×W×C floats in [0, 1]) and the channel's mean on it, without jitter."""
    module = layer.module
    c, h, w = loaded.entry.input.channels, loaded.entry.input.height, loaded.entry.input.width
    generator = torch.Generator().manual_seed(seed)
    chooser = random.Random(seed)
    spectrum = (torch.randn((c, h, w // 2 + 1, 2), generator=generator) * 0.01).requires_grad_(True)
    scale = fourier_scale(h, w)[None]
    mix = torch.tensor(mixing, dtype=torch.float32) if mixing is not None and c == 3 else None
    mean = torch.tensor(loaded.preprocess_fn.mean, dtype=torch.float32).reshape(-1, 1, 1)[:c]
    std = torch.tensor(loaded.preprocess_fn.std, dtype=torch.float32).reshape(-1, 1, 1)[:c]
    optimiser = torch.optim.Adam([spectrum], lr=lr)
    captured = LayerRecorder()
    hook = captured.hook(layer.name, stop=True)  # the pass stops at the layer: nothing after it runs

    def picture() -> torch.Tensor:
        complex_spec = torch.view_as_complex(spectrum) * scale
        # c×h×w in the decorrelated space (orthonormal transform: the 1/f weights set the spectrum's shape)
        image = torch.fft.irfft2(complex_spec, s=(h, w), norm="ortho") / 4.0
        if mix is not None:
            image = torch.einsum("ij,jhw->ihw", mix, image)
        return torch.sigmoid(image)

    def objective(batch: torch.Tensor) -> torch.Tensor:
        captured.clear()
        with forward_hooks(loaded, [(module, hook)]):
            run_forward(loaded.module, batch)
        if layer.name not in captured.outputs:
            raise ApiError(422, "not_run", f"Layer {layer!r} did not run in the forward pass.")
        out = captured.outputs[layer.name][0]
        if not 0 <= channel < out.shape[0]:
            raise ApiError(404, "unknown_channel", f"Layer {layer!r} has channels 0 to {out.shape[0] - 1}; there is no {channel}.")
        return out[channel].mean()

    value = 0.0
    for step in range(steps):
        image = picture()
        # random shift (wrapping) and rescale around the centre: patterns must work anywhere
        dy, dx = chooser.randint(-jitter, jitter), chooser.randint(-jitter, jitter)
        moved = torch.roll(image, shifts=(dy, dx), dims=(1, 2))
        factor = chooser.uniform(*scales)
        size = (max(2, round(h * factor)), max(2, round(w * factor)))
        moved = F.interpolate(moved[None], size=size, mode="bilinear", align_corners=False)
        moved = _fit(moved, h, w)
        batch = ((moved - mean) / std).to(loaded.device)
        if admit is None:
            loss = -objective(batch)
        else:
            with admit(LONG_WORK, "heavy"):
                loss = -objective(batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        value = -float(loss.detach())
        if progress is not None:
            progress(step + 1, value)
    with torch.no_grad():
        final = picture()
        value = float(objective(((final - mean) / std)[None].to(loaded.device)))
    return final.permute(1, 2, 0).detach().numpy(), value


def _fit(batch: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Centre-crop or reflect-pad a 1×C×H'×W' batch back to H×W."""
    _, _, bh, bw = batch.shape
    if bh >= h and bw >= w:
        top, left = (bh - h) // 2, (bw - w) // 2
        return batch[:, :, top:top + h, left:left + w]
    pad_h, pad_w = max(0, h - bh), max(0, w - bw)
    batch = F.pad(batch, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), mode="reflect")
    return batch[:, :, :h, :w]


def to_png(picture: np.ndarray) -> bytes:
    pixels = np.clip(picture * 255.0, 0, 255).round().astype(np.uint8)
    image = Image.fromarray(pixels[..., 0], mode="L") if pixels.shape[2] == 1 else Image.fromarray(pixels, mode="RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class FeatureVisualisations:
    """Jobs on the shared background worker; results on disk (PNG + JSON) under a byte budget."""

    def __init__(self, jobs: Jobs, cache_dir: Path, data_dir: Path | None, *, steps: int,
                 cache_bytes: int, admit: Admit | None) -> None:
        self.jobs = jobs
        self.cache_dir = cache_dir
        self.data_dir = data_dir
        self.steps = steps
        self.cache_bytes = cache_bytes
        self.admit = admit
        self._lock = threading.Lock()
        # the colour mixing of each source, measured once (a few floats: the service owns it, no module global)
        self.mixings: ResultCache[tuple[tuple[float, ...], ...]] = ResultCache("colour mixing matrices", 64 * 1024)

    def colour_mixing(self, source: str) -> tuple[tuple[float, ...], ...]:
        """:func:`measure_colour_mixing` of ``source``, computed once."""
        data_dir = None if self.data_dir is None else str(self.data_dir)
        return self.mixings.get_or_compute(source, lambda: measure_colour_mixing(source, data_dir))

    def _key(self, loaded: LoadedModel, layer: str, channel: int, seed: int) -> tuple[Any, ...]:
        return ("featurevis", loaded.entry.id, loaded.variant, layer, channel, seed, self.steps)

    def _paths(self, key: tuple[Any, ...]) -> tuple[Path, Path]:
        digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]
        return self.cache_dir / f"featurevis-{digest}.png", self.cache_dir / f"featurevis-{digest}.json"

    def parameterisation(self, loaded: LoadedModel) -> str:
        colour = loaded.entry.input.channels == 3
        return "Fourier (1/f), decorrelated colour, jitter ±4 px, scale 0.92–1.08" if colour else "Fourier (1/f), jitter ±4 px, scale 0.92–1.08"

    def status(self, loaded: LoadedModel, layer: str, channel: int, seed: int) -> dict[str, Any]:
        key = self._key(loaded, layer, channel, seed)
        png, meta = self._paths(key)
        job = None
        if not (png.exists() and meta.exists()):
            job = self.jobs.get(key)
            result = getattr(job, "result", None)  # a worker's (through the queue): this replica keeps it
            if result is not None:
                self._install(key, result)
        if png.exists() and meta.exists():
            info = json.loads(meta.read_text())
            return {"state": "done", "progress": {"done": self.steps, "total": self.steps}, **info}
        if job is None:
            return {"state": "missing", "progress": {"done": 0, "total": self.steps}, "seed": seed}
        return {**job.as_json(), "seed": seed, "parameterisation": self.parameterisation(loaded)}

    def _install(self, key: tuple[Any, ...], result: dict[str, Any]) -> None:
        png, meta = self._paths(key)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        png.write_bytes(result["png"])
        meta.write_text(json.dumps(result["meta"]))
        self._evict(keep=png)

    def start(self, loaded: LoadedModel, resolved: ModelLayer, channel: int, seed: int) -> dict[str, Any]:
        """Start optimising (``resolved``: the layer found once by ``server.deps.LayerDep``)."""
        layer = resolved.name
        current = self.status(loaded, layer, channel, seed)
        if current["state"] in ("done", "queued", "running"):
            return current
        key = self._key(loaded, layer, channel, seed)
        self.jobs.forget(key)
        mixing = None
        if loaded.entry.input.channels == 3:
            source = "shapes" if loaded.entry.input.height <= 64 else "photos"
            mixing = self.colour_mixing(source)
        params = {"model": loaded.entry.id, "weights": loaded.variant, "layer": layer, "channel": channel,
                  "seed": seed, "steps": self.steps, "mixing": mixing, "description": self.parameterisation(loaded)}

        def run(job: Job) -> None:
            self._install(key, visualise(loaded, resolved, params, self.admit, job))

        task = Task("featurevis", params) if loaded.entry.family in SHAREABLE_FAMILIES else None
        self.jobs.submit(key, run, total=self.steps, task=task)
        return self.status(loaded, layer, channel, seed)

    def cancel(self, loaded: LoadedModel, layer: str, channel: int, seed: int) -> dict[str, Any]:
        self.jobs.cancel(self._key(loaded, layer, channel, seed))
        return self.status(loaded, layer, channel, seed)

    def png(self, loaded: LoadedModel, layer: str, channel: int, seed: int) -> bytes:
        png, _ = self._paths(self._key(loaded, layer, channel, seed))
        try:
            return png.read_bytes()
        except FileNotFoundError:
            raise ApiError(404, "not_computed", "This feature visualisation has not been made yet; POST …/feature-vis starts it.") from None

    def _evict(self, keep: Path) -> None:
        with self._lock:
            evict_oldest(self.cache_dir, "featurevis-*.png", self.cache_bytes, keep, companion_suffixes=(".json",))


def visualise(loaded: LoadedModel, layer: ModelLayer, params: dict[str, Any], admit: Admit | None,
              job: Any) -> dict[str, Any]:
    """One feature visualisation job: the PNG and its description (``job`` gets the progress)."""
    steps = params["steps"]
    job.progress(0, steps, objective=None)
    picture, value = optimise(loaded, layer, params["channel"], steps=steps, seed=params["seed"],
                              mixing=params["mixing"], admit=admit, progress=lambda step, v: job.progress(step, objective=v))
    return {"png": to_png(picture), "meta": {"objective": value, "seed": params["seed"], "steps": steps,
                                             "layer": params["layer"], "channel": params["channel"],
                                             "parameterisation": params["description"]}}


def featurevis_task(context: WorkerContext, params: dict[str, Any], job: Any) -> dict[str, Any]:
    """The job on a queue worker (``job_queue.TASKS``): the same computation, the model built there."""
    loaded = context.runtime.load(params["model"], params["weights"])
    return visualise(loaded, loaded.named_layer(params["layer"]), params, None, job)
