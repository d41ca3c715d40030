"""Train a bundled model and write ``<id>.pt`` (a state_dict) and ``<id>.metrics.json``.

One function, :func:`train_model`, used by the ``convscope train`` command. The network comes from
the registry's ``build_untrained()`` (so layer names, and the "untrained" view's weights, are exactly
the starting point of training); inputs are normalised with the same constants as the registry's
preprocessing, so a trained model sees at inference what it saw in training.

Data:
- MNIST models: with the 60k training images, the standard 60k/10k split. Offline they are usually
  missing; then the first 8,000 *test* digits (with small random shifts/rotations/scalings) train
  the model and the last 2,000, never seen in training, measure it. The final epoch is kept: there
  is no validation set to select on, and selecting on the test digits would be cheating.
- tinyvgg-shapes: generated train / val / test splits with distinct seeds; the epoch with the best
  validation accuracy is kept and the test split, used for nothing else, measures it.

Deterministic given ``seed``: shuffling and augmentation draw from one seeded ``torch.Generator``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from models import registry
from models.datasets import mnist, shapes
from models.preprocessing import MNIST_MEAN, MNIST_STD, SHAPES_MEAN, SHAPES_STD

MNIST_MODELS = ("lenet5", "mnist-shallow", "mnist-deep")
SHAPES_MODELS = ("tinyvgg-shapes",)
MNIST_FALLBACK_TRAIN = 8_000  # test digits 0…7999 train when the real training images are missing
EVAL_BATCH = 1_000
TRAIN_EVAL_MAX = 8_000  # train_accuracy is measured on at most this many training images (time)
# One intra-op thread: on the shared 2-core machine, under load, two threads spent most of their time
# waiting for each other (mnist-shallow: ~80 s per epoch with two, ~3 s with one).
MAX_THREADS = 1

LENET5_REFERENCE = (
    "LeCun et al. 1998 (Gradient-based learning applied to document recognition) report 0.95% test "
    "error for LeNet-5 without distortions (0.8% with distortions), trained on the full 60,000 training "
    "images and tested on the 10,000 test images. Without the training images this model learns from "
    "8,000 test digits only and is measured on 2,000 others, so its numbers are not directly comparable."
)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one model's training run (recorded in its metrics file)."""

    epochs: int
    batch_size: int
    learning_rate: float  # the one-cycle schedule's peak
    weight_decay: float
    augment: str  # "affine" (MNIST), "dihedral" (Shapes: flips/transposes with grating labels remapped)
    # "registry": keep build_untrained()'s PyTorch-default init; "kaiming": He-normal re-initialisation,
    # which TinyVGG (four ReLU convolutions, no normalisation) needs: with the default init its logits
    # start almost constant and training stalls for epochs.
    init: str = "registry"
    channels_last: bool = False  # faster CPU convolutions for the RGB net (same numbers, other layout)


TRAIN_CONFIGS: dict[str, TrainConfig] = {
    "lenet5": TrainConfig(epochs=10, batch_size=64, learning_rate=3e-3, weight_decay=1e-4, augment="affine"),
    "mnist-shallow": TrainConfig(epochs=10, batch_size=64, learning_rate=2e-3, weight_decay=1e-4, augment="affine"),
    "mnist-deep": TrainConfig(epochs=8, batch_size=64, learning_rate=2e-3, weight_decay=1e-4, augment="affine"),
    "tinyvgg-shapes": TrainConfig(
        epochs=20, batch_size=32, learning_rate=2e-3, weight_decay=1e-4, augment="dihedral", init="kaiming",
        channels_last=True,
    ),
}

AUGMENTATION_TEXT = {
    "affine": "per-image random rotation ±10°, scale 0.9–1.1, shift ±2 px",
    "dihedral": "per-image random flips and transposition (the 8 symmetries of the square), grating labels "
    "remapped to the new stripe angle",
    "none": "none",
}


@dataclass
class _Data:
    dataset: str
    train_x: torch.Tensor  # uint8 N×C×H×W
    train_y: torch.Tensor  # int64 N
    test_x: torch.Tensor
    test_y: torch.Tensor
    val_x: torch.Tensor | None
    val_y: torch.Tensor | None
    mean: float
    std: float
    train_source: str
    test_set: str


def _nchw(images: np.ndarray) -> torch.Tensor:
    array = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(array))


def _mnist_data(data_dir: str | Path | None, download: bool, limit: int | None) -> _Data:
    found = mnist.find_data_dir(data_dir)
    train = mnist.load_mnist_train(data_dir if data_dir is not None else found, download=download)
    test_x, test_y = _mnist_test(found, download)
    if train is not None:
        train_x, train_y = train
        n = len(train_x) if limit is None else min(limit, len(train_x))
        source = "mnist-train-60k" if n == 60_000 else f"mnist-train[:{n}]"
        test_set = f"the MNIST test set ({len(test_x):,} images, never used in training)"
        return _Data(
            "MNIST",
            _nchw(train_x[:n]),
            torch.from_numpy(train_y[:n]),
            _nchw(test_x),
            torch.from_numpy(test_y),
            None,
            None,
            MNIST_MEAN,
            MNIST_STD,
            source,
            test_set,
        )
    n = MNIST_FALLBACK_TRAIN if limit is None else min(limit, MNIST_FALLBACK_TRAIN)
    held = slice(MNIST_FALLBACK_TRAIN, len(test_x))
    last = len(test_x) - 1
    return _Data(
        "MNIST",
        _nchw(test_x[:n]),
        torch.from_numpy(test_y[:n]),
        _nchw(test_x[held]),
        torch.from_numpy(test_y[held]),
        None,
        None,
        MNIST_MEAN,
        MNIST_STD,
        f"mnist-test[:{n}] (train images unavailable)",
        f"MNIST test images {MNIST_FALLBACK_TRAIN}–{last} ({last - MNIST_FALLBACK_TRAIN + 1:,} never used in training)",
    )


def _mnist_test(found: Path | None, download: bool) -> tuple[np.ndarray, np.ndarray]:
    for root in (found, mnist.DEFAULT_DOWNLOAD_ROOT):
        if root is not None:
            try:
                return mnist.load_mnist_test(root)
            except FileNotFoundError:
                pass
    if not download:
        raise FileNotFoundError(
            "MNIST test images not found: pass a data directory holding mnist/t10k-images-idx3-ubyte.gz, "
            f"set {mnist.ENV_VAR}, or use download=True"
        )
    import torchvision  # deferred: only the download path needs it

    torchvision.datasets.MNIST(str(mnist.DEFAULT_DOWNLOAD_ROOT), train=False, download=True)
    return mnist.load_mnist_test(mnist.DEFAULT_DOWNLOAD_ROOT)


def _shapes_data(limit: int | None) -> _Data:
    sizes = dict(shapes.SPLIT_SIZES)
    if limit is not None:  # a quick run: every split shrinks, and the test_set sentence says so
        sizes = {name: min(size, limit) for name, size in sizes.items()}
    train = shapes.generate_split("train", sizes["train"])
    val = shapes.generate_split("val", sizes["val"])
    test = shapes.generate_split("test", sizes["test"])
    seeds = shapes.SPLIT_SEEDS
    return _Data(
        "Shapes (synthetic)",
        _nchw(train.images),
        torch.from_numpy(train.labels),
        _nchw(test.images),
        torch.from_numpy(test.labels),
        _nchw(val.images),
        torch.from_numpy(val.labels),
        SHAPES_MEAN,
        SHAPES_STD,
        f"shapes train split[:{sizes['train']}] (seed {seeds['train']})",
        f"the Shapes test split ({sizes['test']:,} generated images, seed {seeds['test']}; "
        "never used in training or model selection)",
    )


def normalise(batch: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 N×C×H×W → float32 as the registry's preprocessing produces it: (x/255 − mean) / std."""
    return (batch.to(torch.float32) / 255.0 - mean) / std


def _augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-sample random affine warp of a float batch in [0, 1] (0 = background outside).

    Rotation ±10°, scale 0.9–1.1, shift ±2 px: small enough that every digit keeps its identity.
    """
    n, _, h, w = batch.shape
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(10)
    scale = 0.9 + 0.2 * torch.rand(n, generator=generator)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2.0 * 2 / torch.tensor([w, h]))
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# Class permutations of the Shapes labels under a flip and under a transposition: a flip mirrors a
# stripe angle a to 180° − a (45° ↔ 135°), a transposition maps it to 90° − a (0° ↔ 90°).
_GRATING = {a: shapes.CLASSES.index(f"grating {a}°") for a in (0, 45, 90, 135)}
_FLIP_LABELS = torch.arange(len(shapes.CLASSES))
_FLIP_LABELS[_GRATING[45]], _FLIP_LABELS[_GRATING[135]] = _GRATING[135], _GRATING[45]
_TRANSPOSE_LABELS = torch.arange(len(shapes.CLASSES))
_TRANSPOSE_LABELS[_GRATING[0]], _TRANSPOSE_LABELS[_GRATING[90]] = _GRATING[90], _GRATING[0]


def _dihedral(batch: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a random one of the square's 8 symmetries to each image, relabelling gratings to match.

    The generator's distribution is itself symmetric (uniform positions, rotations and gradient
    directions), so this only adds views the dataset could have produced.
    """
    ops = torch.randint(0, 8, (len(batch),), generator=generator)
    batch, labels = batch.clone(), labels.clone()
    hflip, vflip, transpose = (ops & 1).bool(), (ops & 2).bool(), (ops & 4).bool()
    batch[hflip] = batch[hflip].flip(-1)
    labels[hflip] = _FLIP_LABELS[labels[hflip]]
    batch[vflip] = batch[vflip].flip(-2)
    labels[vflip] = _FLIP_LABELS[labels[vflip]]
    batch[transpose] = batch[transpose].transpose(-1, -2)
    labels[transpose] = _TRANSPOSE_LABELS[labels[transpose]]
    return batch, labels


def _kaiming_init(model: nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * math.sqrt(2.0 / fan_in))
                module.bias.zero_()


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float) -> dict[str, Any]:
    """Accuracy, mean cross-entropy and correct count of ``model`` (put in eval mode) on uint8 images."""
    model.eval()
    correct, loss_sum = 0, 0.0
    for lo in range(0, len(images), EVAL_BATCH):
        logits = model(normalise(images[lo : lo + EVAL_BATCH], mean, std))
        target = labels[lo : lo + EVAL_BATCH]
        loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
        correct += int((logits.argmax(1) == target).sum())
    n = len(images)
    return {"accuracy": correct / n, "loss": loss_sum / n, "correct": correct, "count": n}


def train_model(
    model_id: str,
    *,
    data_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    epochs: int | None = None,
    seed: int = 0,
    progress: bool = True,
    download: bool = False,
    limit: int | None = None,
) -> dict[str, Any]:
    """Train ``model_id`` and write ``<out_dir>/<id>.pt`` and ``<out_dir>/<id>.metrics.json``.

    ``data_dir`` is where MNIST is looked for (see :func:`models.datasets.mnist.find_data_dir`);
    ``download`` lets torchvision fetch the MNIST training images; ``limit`` caps the number of
    training images (and, for Shapes, of every split) for quick runs. Returns the metrics dict.
    """
    if model_id not in TRAIN_CONFIGS:
        raise KeyError(f"no training recipe for {model_id!r}; trainable: {', '.join(TRAIN_CONFIGS)}")
    config = TRAIN_CONFIGS[model_id]
    if epochs is not None:
        if epochs < 1:
            raise ValueError("epochs must be at least 1")
        config = TrainConfig(**{**asdict(config), "epochs": epochs})
    out = Path(out_dir) if out_dir is not None else registry.WEIGHTS_DIR
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(min(MAX_THREADS, previous_threads))
    try:
        return _train(model_id, config, data_dir, out, seed, progress, download, limit)
    finally:
        torch.set_num_threads(previous_threads)


def _train(
    model_id: str,
    config: TrainConfig,
    data_dir: str | Path | None,
    out: Path,
    seed: int,
    progress: bool,
    download: bool,
    limit: int | None,
) -> dict[str, Any]:
    started = time.perf_counter()
    data = _shapes_data(limit) if model_id in SHAPES_MODELS else _mnist_data(data_dir, download, limit)
    entry = registry.get_entry(model_id)
    model = entry.build_untrained()
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # nothing else should draw, but pin the global stream all the same
    if config.init == "kaiming":
        _kaiming_init(model, generator)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)

    n = len(data.train_x)
    steps_per_epoch = math.ceil(n / config.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    total_steps = config.epochs * steps_per_epoch
    # OneCycleLR needs at least one step in each phase: tiny smoke runs get a longer warm-up share
    # (unchanged 20% for any real run of ten steps or more), and under four steps a constant rate.
    schedule: torch.optim.lr_scheduler.LRScheduler
    if total_steps >= 4:
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.learning_rate, total_steps=total_steps, pct_start=max(0.2, 2.0 / total_steps)
        )
    else:
        schedule = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    history: list[dict[str, float]] = []
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator)
        seen, correct, loss_sum = 0, 0, 0.0
        bar = tqdm(total=n, desc=f"{model_id} epoch {epoch}/{config.epochs}", unit="img", disable=not progress, leave=False)
        for step in range(steps_per_epoch):
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            batch = data.train_x[index].to(torch.float32) / 255.0
            target = data.train_y[index]
            if config.augment == "affine":
                batch = _augment(batch, generator)
            elif config.augment == "dihedral":
                batch, target = _dihedral(batch, target, generator)
            batch = (batch - data.mean) / data.std
            if config.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            logits = model(batch)
            loss = F.cross_entropy(logits, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            seen += len(index)
            correct += int((logits.argmax(1) == target).sum())
            loss_sum += loss.item() * len(index)
            bar.update(len(index))
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}", refresh=False)
        bar.close()
        record = {"epoch": epoch, "train_loss": loss_sum / seen, "train_accuracy_running": correct / seen}
        if data.val_x is not None:
            val = evaluate(model, data.val_x, data.val_y, data.mean, data.std)
            record["val_accuracy"] = val["accuracy"]
            if best is None or val["accuracy"] > best[0]:
                best = (val["accuracy"], epoch, {k: v.detach().clone() for k, v in model.state_dict().items()})
        history.append(record)
        if progress:
            tqdm.write(f"{model_id} epoch {epoch}: " + ", ".join(f"{k}={v:.4f}" for k, v in record.items() if k != "epoch"))

    if best is not None:
        model.load_state_dict(best[2])
    chosen_epoch = best[1] if best is not None else config.epochs
    test = evaluate(model, data.test_x, data.test_y, data.mean, data.std)
    train_eval = evaluate(model, data.train_x[:TRAIN_EVAL_MAX], data.train_y[:TRAIN_EVAL_MAX], data.mean, data.std)

    out.mkdir(parents=True, exist_ok=True)
    weights_path = out / f"{model_id}.pt"
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    torch.save(state, weights_path)
    metrics: dict[str, Any] = {
        "model": model_id,
        "dataset": data.dataset,
        "train_source": data.train_source,
        "train_size": n,
        "test_set": data.test_set,
        "test_size": test["count"],
        "test_accuracy": test["accuracy"],
        "test_correct": test["correct"],
        "test_loss": test["loss"],
        "train_accuracy": train_eval["accuracy"],
        "train_loss": train_eval["loss"],
        "train_eval_size": train_eval["count"],
        "selection": "best validation accuracy" if best is not None else "final epoch",
        "selected_epoch": chosen_epoch,
        "epochs": config.epochs,
        "seed": seed,
        "batch_size": config.batch_size,
        "optimizer": f"AdamW (weight decay {config.weight_decay:g})",
        "learning_rate": config.learning_rate,
        "lr_schedule": "one-cycle (cosine), 20% warm-up, peak = learning_rate",
        "augmentation": AUGMENTATION_TEXT[config.augment],
        "normalisation": {"mean": data.mean, "std": data.std, "formula": "(pixel/255 - mean) / std"},
        "initialisation": (
            f"registry build_untrained() (seed {registry.UNTRAINED_SEED})"
            if config.init == "registry"
            else f"He-normal (fan-in, ReLU gain), zero biases, drawn from the training seed {seed}"
        ),
        "num_params": sum(p.numel() for p in model.parameters()),
        "weights_bytes": weights_path.stat().st_size,
        "history": history,
        "duration_s": round(time.perf_counter() - started, 1),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "device": "cpu",
        "threads": torch.get_num_threads(),
    }
    if best is not None:
        metrics["val_accuracy"] = best[0]
        metrics["val_set"] = f"the Shapes val split ({len(data.val_x):,} images, seed {shapes.SPLIT_SEEDS['val']})"
    if model_id == "lenet5":
        metrics["reference"] = LENET5_REFERENCE
    (out / f"{model_id}.metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
    return metrics
