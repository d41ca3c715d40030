"""What a channel looks for, from data: the dataset images whose maximum of a channel is largest.

For one (model, weights variant, dataset) a background job runs the whole dataset through the model once,
in batches, with request-scoped hooks on every selectable layer, and keeps for every channel of every layer
its ``max_k`` best images: the channel's maximum over positions, the image's index in the dataset and the
(y, x) of that maximum (the first one in row-major order when several cells tie). Images are ranked by
that value, largest first; equal values go to the smaller dataset index. The table is written to disk
(.npz, no pickles) under a byte budget and answers every later request for that model and dataset.

Datasets (:mod:`server.services.channels.datasets`): ``mnist``, ``shapes``, ``photos`` and ``folder:NAME``. A
job's cost is bounded before it starts: images × input pixels must stay under ``max_pixels`` (ResNet on
10,000 upscaled digits is refused with a clear message; LeNet on them takes seconds); a named folder is
scanned up to that budget (images spread evenly over its listing) and the answer says how many. A scan
writes its progress to disk every ``checkpoint_s`` seconds and a restarted server resumes it there.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from models.registry import ModelEntry
from server.errors import ApiError
from server.services.channels.datasets import Dataset, open_dataset
from server.services.image_folders import ImageFolders, folder_name
from server.services.runtime.cache import ResultCache
from server.services.runtime.hooks import LayerRecorder, forward_hooks
from server.services.runtime.inputs import input_picture
from server.services.runtime.model_runtime import LoadedModel
from server.services.work.background_jobs import Job, Jobs
from server.services.work.disk_budget import evict_oldest
from server.services.work.job_queue import SHAREABLE_FAMILIES, Task, WorkerContext
from server.services.work.scheduler import Admit

FORMAT_VERSION = 1

LONG_WORK = "channels/background"  # the admission label of the long runs (example tables, feature vis)


# --- the table ------------------------------------------------------------------------------------------

@dataclass
class ExampleTable:
    """Per layer: values C×K (float32, −inf where fewer than K images), dataset indices C×K, positions C×K×2."""

    layers: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    images: int

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes + i.nbytes + p.nbytes for v, i, p in self.layers.values())

    def save(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {"names": np.array(list(self.layers), dtype=np.str_),
                                         "images": np.array([self.images, FORMAT_VERSION], dtype=np.int64)}
        for n, (values, indices, positions) in enumerate(self.layers.values()):
            arrays[f"v{n}"], arrays[f"i{n}"], arrays[f"p{n}"] = values, indices, positions
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ExampleTable | None:
        try:
            with np.load(path, allow_pickle=False) as data:
                images, version = (int(x) for x in data["images"])
                if version != FORMAT_VERSION:
                    return None
                names = [str(n) for n in data["names"]]
                layers = {name: (data[f"v{n}"], data[f"i{n}"], data[f"p{n}"]) for n, name in enumerate(names)}
        except (OSError, ValueError, KeyError):
            return None
        return cls(layers, images)


class ChannelTopImages:
    """Running top-K images per channel of one layer."""

    def __init__(self, channels: int, k: int) -> None:
        self.values = np.full((channels, k), -np.inf, dtype=np.float32)
        self.indices = np.full((channels, k), -1, dtype=np.int64)
        self.positions = np.zeros((channels, k, 2), dtype=np.int32)

    def add(self, maxima: np.ndarray, positions: np.ndarray, start: int) -> None:
        """``maxima`` B×C, ``positions`` B×C×2 for dataset images start … start+B−1."""
        k = self.values.shape[1]
        batch = maxima.shape[0]
        values = np.concatenate([self.values, maxima.T.astype(np.float32)], axis=1)
        indices = np.concatenate([self.indices, np.broadcast_to(np.arange(start, start + batch), (values.shape[0], batch))], axis=1)
        pos = np.concatenate([self.positions, positions.transpose(1, 0, 2).astype(np.int32)], axis=1)
        # largest value first, then the smaller index; empty slots (index −1, value −inf) sort last
        order = np.lexsort((np.where(indices < 0, np.iinfo(np.int64).max, indices), -values.astype(np.float64)), axis=1)[:, :k]
        rows = np.arange(values.shape[0])[:, None]
        self.values, self.indices, self.positions = values[rows, order], indices[rows, order], pos[rows, order]


def channel_maxima(output: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """B×C maxima over positions and B×C×2 (y, x) of the first maximum, for B×C×H×W or B×F outputs."""
    out = output.detach().to("cpu", torch.float32)
    if out.dim() == 2:
        return out.numpy(), np.zeros((*out.shape, 2), dtype=np.int32)
    b, c, _h, w = out.shape
    flat = out.reshape(b, c, -1)
    arg = flat.argmax(dim=2)  # the first maximal value's index
    maxima = flat.gather(2, arg[..., None])[..., 0]
    pos = torch.stack([arg // w, arg % w], dim=-1)
    return maxima.numpy(), pos.numpy().astype(np.int32)


def compute_table(loaded: LoadedModel, dataset: Dataset, layer_names: list[str], k: int, batch_size: int,
                  admit: Admit, job: Job | None = None,
                  resume: ExampleTable | None = None,
                  checkpoint: Callable[[ExampleTable], None] | None = None, checkpoint_s: float = 10.0) -> ExampleTable:
    """Run the dataset through the model and keep every channel's top ``k`` images. ``resume``: a partial
    table (``images`` = how many were done) to go on from; ``checkpoint`` is handed the partial table about
    every ``checkpoint_s`` seconds."""
    modules = dict(loaded.module.named_modules())
    tops: dict[str, ChannelTopImages] = {}
    done = 0
    if resume is not None and 0 < resume.images < dataset.size:
        for name, (values, indices, positions) in resume.layers.items():
            tops[name] = ChannelTopImages(values.shape[0], k)
            tops[name].values, tops[name].indices, tops[name].positions = values.copy(), indices.copy(), positions.copy()
        done = resume.images
    recorder = LayerRecorder()  # the last call wins, as everywhere in the API
    seen = recorder.outputs

    def snapshot(count: int) -> ExampleTable:
        return ExampleTable({name: (t.values, t.indices, t.positions) for name, t in tops.items()}, count)

    hooks = [(modules[name], recorder.hook(name, dims=(2, 4))) for name in layer_names if name in modules]
    if job is not None:
        job.progress(done, dataset.size)
    last_checkpoint = time.monotonic()
    for start, images in dataset.batches(batch_size, done):
        batch = torch.stack([loaded.preprocess(image) for image in images]).to(loaded.device)
        recorder.clear()
        while True:
            try:
                with admit(LONG_WORK, "heavy"):
                    with forward_hooks(loaded, hooks), torch.no_grad():
                        loaded.module(batch)
                break
            except ApiError as err:  # the work queue was full: wait for room, the page keeps polling
                if err.status != 503:
                    raise
                if job is not None:
                    job.progress(done)
                time.sleep(0.5)
        for name, output in seen.items():
            maxima, positions = channel_maxima(output)
            if name not in tops:
                tops[name] = ChannelTopImages(maxima.shape[1], k)
            tops[name].add(maxima, positions, start)
        done = start + len(images)
        if checkpoint is not None and time.monotonic() - last_checkpoint >= checkpoint_s and done < dataset.size:
            checkpoint(snapshot(done))
            last_checkpoint = time.monotonic()
        if job is not None:
            job.progress(done)
    recorder.clear()
    return snapshot(dataset.size)


# --- the service ----------------------------------------------------------------------------------------

class ChannelExamples:
    def __init__(self, jobs: Jobs, cache_dir: Path, data_dir: Path | None, *, max_k: int,
                 max_pixels: int, cache_bytes: int, batch_size: int, memory_items: int,
                 admit: Admit, folders: ImageFolders | None = None, checkpoint_s: float = 10.0) -> None:
        self.jobs = jobs
        self.cache_dir = cache_dir
        self.data_dir = data_dir
        self.max_k = max_k
        self.max_pixels = max_pixels
        self.cache_bytes = cache_bytes
        self.batch_size = batch_size
        self.memory_items = max(1, memory_items)
        self.admit = admit
        self.folders = folders
        self.checkpoint_s = checkpoint_s
        # the tables in memory (the files on disk are the lasting cache)
        self.tables: ResultCache[ExampleTable] = ResultCache("channel example tables", cache_bytes,
                                                             max_items=self.memory_items)
        self._lock = threading.Lock()
        self._datasets: dict[str, Dataset] = {}

    def dataset(self, name: str) -> Dataset:
        """The named dataset (a folder listed again when its files changed since it was first opened)."""
        with self._lock:
            hit = self._datasets.get(name)
        folder = folder_name(name)
        if folder is not None and self.folders is not None:
            # the listing is kept by the folders service; the dataset follows its fingerprint
            listed = self.folders.get(folder)
            if hit is not None and not hit.key.endswith(listed.fingerprint):
                hit = None
        if hit is None:
            hit = open_dataset(name, self.data_dir, self.folders)
            with self._lock:
                self._datasets[name] = hit
        return hit

    def default_dataset(self, entry: ModelEntry) -> str:
        """The dataset a model's examples come from when the request names none: the models-file entry's
        ``examples = "folder:NAME"``; else its own training data (MNIST, Shapes); for photo models the first
        named image folder when the server has one, else the offline photos."""
        named = entry.meta.get("examples")
        if isinstance(named, str) and named:
            return named
        dataset = entry.dataset.lower()
        if dataset.startswith("mnist"):
            return "mnist"
        if dataset.startswith("shapes"):
            return "shapes"
        if self.folders is not None and self.folders.names():
            return f"folder:{self.folders.names()[0]}"
        return "photos"

    def scanned(self, loaded: LoadedModel, name: str) -> Dataset:
        """The dataset as this model's scan sees it: a folder is cut to the scan budget (spread evenly),
        the built-in datasets are refused past it (422 ``too_costly``)."""
        data = self.dataset(name)
        per_image = loaded.entry.input.height * loaded.entry.input.width
        if data.size * per_image <= self.max_pixels:
            return data
        if folder_name(name) is not None and self.max_pixels >= per_image:
            return data.limited(self.max_pixels // per_image)
        raise ApiError(422, "too_costly",
                       f"Scanning {data.size:,} {name} images at {loaded.entry.id}'s input size is more work "
                       f"({data.size * per_image:,} input pixels) than this server allows ({self.max_pixels:,}); "
                       "try a smaller dataset.")

    def _path(self, key: tuple[str, str, str]) -> Path:
        digest = hashlib.sha256("|".join(key).encode()).hexdigest()[:32]
        return self.cache_dir / f"examples-{digest}.npz"

    def _remember(self, key: tuple[str, str, str], table: ExampleTable) -> None:
        self.tables.put(key, table)

    def table(self, loaded: LoadedModel, dataset: str, layers: list[dict[str, Any]]) -> tuple[ExampleTable | None, Job | None]:
        """The table when ready, else the job computing it (started on first use, resumed from its last
        checkpoint when a server before this one stopped in the middle)."""
        data = self.scanned(loaded, dataset)
        key = (loaded.entry.id, loaded.variant, f"{data.key}#{data.size}")
        hit = self.tables.get(key)
        if hit is not None:
            return hit, None
        path = self._path(key)
        if path.exists():
            table = ExampleTable.load(path)
            if table is not None:
                self._remember(key, table)
                return table, None
        names = [layer["name"] for layer in layers]
        existing = self.jobs.get(key)
        finished = getattr(existing, "result", None)  # a queue worker's table: this replica keeps it
        if finished is not None:
            self._install(key, finished)
            return finished, None
        if existing is not None and existing.state == "failed":
            self.jobs.forget(key)
            raise ApiError(503, "examples_failed", f"Computing the examples failed ({existing.error}); asking again retries.",
                           headers={"Retry-After": "1"})
        partial = path.with_name(path.stem + ".partial.npz")

        def run(job: Job) -> None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            resume = ExampleTable.load(partial) if partial.exists() else None
            table = compute_table(loaded, data, names, self.max_k, self.batch_size, self.admit, job, resume,
                                  lambda part: part.save(partial), self.checkpoint_s)
            partial.unlink(missing_ok=True)
            self._install(key, table)

        task = None
        if loaded.entry.family in SHAREABLE_FAMILIES:
            task = Task("examples", {"model": loaded.entry.id, "weights": loaded.variant, "dataset": dataset,
                                     "dataset_key": data.key, "size": data.size, "layers": names, "k": self.max_k,
                                     "batch_size": self.batch_size})
        job = self.jobs.submit(key, run, total=data.size, task=task)
        if job.state == "done":  # finished between our look and the submit
            hit = self.tables.get(key)
            if hit is not None:
                return hit, None
        return None, job

    def _install(self, key: tuple[str, str, str], table: ExampleTable) -> None:
        path = self._path(key)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        table.save(path)
        self._remember(key, table)
        self._evict_files(keep=path)

    def crop_png(self, loaded: LoadedModel, dataset: str, layers: list[dict[str, Any]], row: dict[str, Any],
                 channel: int, index: int, context: bool = False) -> tuple[bytes, tuple[int, int, int, int]]:
        """Dataset image ``index`` as the model sees it, cropped to the layer's receptive field around the
        channel's maximum; 404 while the table is computed or when the image is not one of its examples.
        ``context``: a region at least twice the field (and ≥ 32 px) around it, enlarged with whole pixels
        to ≥ 96 px, with the field outlined — for early layers whose fields are a few pixels."""
        table, _ = self.table(loaded, dataset, layers)
        if table is None:
            raise ApiError(404, "not_ready", "The examples are still being computed; ask examples.json for progress.")
        hit = next((e for e in examples_for(table, row["name"], channel, self.max_k) if e["index"] == index), None)
        if hit is None:
            raise ApiError(404, "not_an_example",
                           f"{dataset} image {index} is not among the top examples of channel {channel}.")
        picture = input_picture(loaded, loaded.preprocess(self.scanned(loaded, dataset).load(index)))
        box = field_box(row.get("receptive_field"), hit["y"], hit["x"], picture.height, picture.width)
        top, left, bottom, right = box
        buf = io.BytesIO()
        if context:
            with_context(picture, box).save(buf, format="PNG")
        else:
            picture.crop((left, top, right + 1, bottom + 1)).save(buf, format="PNG")
        return buf.getvalue(), box

    def _evict_files(self, keep: Path) -> None:
        """Oldest example tables go first once the folder holds more than the byte budget."""
        evict_oldest(self.cache_dir, "examples-*.npz", self.cache_bytes, keep)  # partial tables count too


def examples_task(context: WorkerContext, params: dict[str, Any], job: Any) -> ExampleTable:
    """The scan on a queue worker (``job_queue.TASKS``): the worker opens the dataset by name with its own
    settings (data folder, image folders) and refuses when its copy differs from the replica's."""
    settings = context.settings
    folders = ImageFolders(settings.image_folders, settings.image_folder_max_files, settings.max_image_pixels)
    data = open_dataset(params["dataset"], settings.data_dir, folders)
    if data.size > params["size"]:
        data = data.limited(params["size"])
    if data.key != params["dataset_key"] or data.size != params["size"]:
        raise ApiError(409, "dataset_differs", f"The worker's {params['dataset']} ({data.size} images) is not the "
                       "server's; give the workers the same data folder and image folders.")
    loaded = context.runtime.load(params["model"], params["weights"])
    return compute_table(loaded, data, params["layers"], params["k"], params["batch_size"],
                         lambda _label, _prior: nullcontext(), job)  # a worker runs one job at a time


def examples_for(table: ExampleTable, layer: str, channel: int, k: int) -> list[dict[str, Any]]:
    """The channel's top ``k`` examples: index, value and (y, x) of the maximum, largest first."""
    if layer not in table.layers:
        raise ApiError(422, "not_recorded", f"Layer {layer!r} did not run as a tensor layer in the dataset pass.")
    values, indices, positions = table.layers[layer]
    if not 0 <= channel < values.shape[0]:
        raise ApiError(404, "unknown_channel", f"Layer {layer!r} has channels 0 to {values.shape[0] - 1}; there is no {channel}.")
    out = []
    for j in range(min(k, values.shape[1])):
        if indices[channel, j] < 0:
            break
        out.append({"index": int(indices[channel, j]), "value": float(values[channel, j]),
                    "y": int(positions[channel, j, 0]), "x": int(positions[channel, j, 1])})
    return out


def with_context(picture: Image.Image, box: tuple[int, int, int, int], min_side: int = 32,
                 min_pixels: int = 96) -> Image.Image:
    """The region around ``box`` (inclusive top, left, bottom, right), enlarged, with ``box`` outlined."""
    top, left, bottom, right = box
    height, width = picture.height, picture.width
    side_h = min(height, max(min_side, 2 * (bottom - top + 1)))
    side_w = min(width, max(min_side, 2 * (right - left + 1)))
    y0 = int(min(max(0, (top + bottom + 1) // 2 - side_h // 2), height - side_h))
    x0 = int(min(max(0, (left + right + 1) // 2 - side_w // 2), width - side_w))
    region = picture.convert("RGB").crop((x0, y0, x0 + side_w, y0 + side_h))
    scale = max(1, -(-min_pixels // max(side_h, side_w)))
    region = region.resize((side_w * scale, side_h * scale), Image.NEAREST)
    draw = ImageDraw.Draw(region)
    draw.rectangle(((left - x0) * scale, (top - y0) * scale, (right - x0 + 1) * scale - 1, (bottom - y0 + 1) * scale - 1),
                   outline=(255, 136, 0), width=max(1, scale // 3))
    return region


def field_box(field: dict[str, Any] | None, y: int, x: int, height: int, width: int) -> tuple[int, int, int, int]:
    """The input pixels (top, left, bottom, right; inclusive, clipped) seen by cell (y, x) of a layer."""
    if not field or field.get("whole_image"):
        return 0, 0, height - 1, width - 1
    (sh, sw), (jh, jw), (oh, ow) = field["size"], field["jump"], field["start"]
    top = int(np.floor(oh + y * jh - (sh - 1) / 2))
    left = int(np.floor(ow + x * jw - (sw - 1) / 2))
    bottom = int(np.ceil(oh + y * jh + (sh - 1) / 2))
    right = int(np.ceil(ow + x * jw + (sw - 1) / 2))
    return max(0, top), max(0, left), min(height - 1, bottom), min(width - 1, right)

