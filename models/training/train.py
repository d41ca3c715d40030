"""``convscope train``: run a :class:`RunConfig` through the one training loop and write ``<id>.pt`` (a
state_dict) and ``<id>.metrics.json``.

The bundled models' recipes are configs (``models.training.config.BUNDLED_RECIPES``); any knob the Train view
offers can be changed on the command line, and the same config and seed give the same weights there as in
the Train view (``tests/test_training_path.py``). With dropout 0 and batch norm off the network is the
registry's architecture with the same layer names; seed 0 starts from ``build_untrained()``'s weights.
Inputs are normalised with the registry's preprocessing constants, so a trained model sees at inference
what it saw in training.

Data: see :mod:`models.training.data` (MNIST offline: test[:8000] train, test[8000:] measure). The final epoch
is kept, except where the data has a validation split (Shapes) and the recipe selects on it.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from models import registry
from models.training import data as datasets
from models.training.config import RunConfig, recipe
from models.training.data import dihedral as _dihedral  # noqa: F401  (tests reach it here)
from models.training.loop import Trainer
from models.training.plan import Sources, plan

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
AUGMENTATION_TEXT = {
    "shift": "shift ±2 px", "rotate": "rotation ±10°", "scale": "scale 0.9–1.1", "flip": "horizontal flips",
}
OPTIMIZER_TEXT = {"sgd": "SGD", "momentum": "SGD with momentum 0.9", "adam": "Adam", "adamw": "AdamW"}
SCHEDULE_TEXT = {
    "constant": "constant", "step": "step decay (×0.1 every third of the epochs)", "cosine": "cosine to 0",
    "onecycle": "one-cycle (cosine), 20% warm-up, peak = learning_rate",
}


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
    config: RunConfig | None = None,
    sources: Sources | None = None,
) -> dict[str, Any]:
    """Train ``model_id`` (its bundled recipe, or ``config``) and write ``<out_dir>/<id>.pt`` and
    ``<out_dir>/<id>.metrics.json``. ``limit`` caps the training images (for Shapes, every split);
    ``download`` lets torchvision fetch the MNIST training images. ``sources``: where named image folders
    and the models file are (its ``data_dir`` gives way to ``data_dir``). Returns the metrics dict."""
    if config is None:
        config = recipe(model_id, seed=seed, train_size=limit)
    if epochs is not None:
        if epochs < 1:
            raise ValueError("epochs must be at least 1")
        config = replace(config, epochs=epochs)
    sources = replace(sources or Sources(), data_dir=Path(data_dir) if data_dir is not None else
                      (sources.data_dir if sources is not None else None))
    run_plan = plan(config, sources, check_files=not download)
    out = Path(out_dir) if out_dir is not None else registry.WEIGHTS_DIR
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(min(MAX_THREADS, previous_threads))
    try:
        return _train(model_id, run_plan, sources, out, progress, download)
    finally:
        torch.set_num_threads(previous_threads)


def _train(model_id: str, run_plan: Any, sources: Sources, out: Path, progress: bool, download: bool
           ) -> dict[str, Any]:
    started = time.perf_counter()
    config = run_plan.config
    data = run_plan.load_data(sources, download)
    trainer = Trainer(config, data, network=run_plan.network())
    n = len(data.train_x)
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    history: list[dict[str, float]] = []
    seen = correct = 0
    loss_sum = 0.0
    bar = None
    for step in trainer.steps():
        if bar is None:
            bar = tqdm(total=n, desc=f"{model_id} epoch {step.epoch}/{config.epochs}", unit="img",
                       disable=not progress, leave=False)
        seen += step.count
        correct += step.correct
        loss_sum += step.loss * step.count
        bar.update(step.count)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}", refresh=False)
        if not step.epoch_end:
            continue
        bar.close()
        bar = None
        record = {"epoch": step.epoch, "train_loss": loss_sum / seen, "train_accuracy_running": correct / seen}
        if data.val_x is not None and config.select_best:
            val = trainer.evaluate(data.val_x, data.val_y)
            record["val_accuracy"] = val["accuracy"]
            if best is None or val["accuracy"] > best[0]:
                best = (val["accuracy"], step.epoch, trainer.state_dict())
        history.append(record)
        seen = correct = 0
        loss_sum = 0.0
        if progress:
            tqdm.write(f"{model_id} epoch {step.epoch}: " + ", ".join(
                f"{k}={v:.4f}" for k, v in record.items() if k != "epoch"))

    model = trainer.model
    if best is not None:
        model.load_state_dict(best[2])
    test = trainer.evaluate(data.test_x, data.test_y)
    train_eval = trainer.evaluate(data.train_x[:TRAIN_EVAL_MAX], data.train_y[:TRAIN_EVAL_MAX])

    out.mkdir(parents=True, exist_ok=True)
    weights_path = out / f"{model_id}.pt"
    torch.save(trainer.state_dict(), weights_path)
    metrics = _metrics(model_id, config, data, test, train_eval, history, best)
    metrics.update({
        "num_params": sum(p.numel() for p in model.parameters()),
        "weights_bytes": weights_path.stat().st_size,
        "duration_s": round(time.perf_counter() - started, 1),
        "threads": torch.get_num_threads(),
    })
    (out / f"{model_id}.metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
    return metrics


def _metrics(model_id: str, config: RunConfig, data: datasets.TrainingData, test: dict[str, Any],
             train_eval: dict[str, Any], history: list[dict[str, float]],
             best: tuple[float, int, dict[str, torch.Tensor]] | None) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "model": model_id,
        "dataset": data.dataset,
        "train_source": data.train_source,
        "train_size": len(data.train_x),
        "test_set": data.test_set,
        "test_size": test["count"],
        "test_accuracy": test["accuracy"],
        "test_correct": test["correct"],
        "test_loss": test["loss"],
        "train_accuracy": train_eval["accuracy"],
        "train_loss": train_eval["loss"],
        "train_eval_size": train_eval["count"],
        "selection": "best validation accuracy" if best is not None else "final epoch",
        "selected_epoch": best[1] if best is not None else config.epochs,
        "epochs": config.epochs,
        "seed": config.seed,
        "batch_size": config.batch_size,
        "optimizer": f"{OPTIMIZER_TEXT[config.optimizer]} (weight decay {config.weight_decay:g})",
        "learning_rate": config.lr,
        "lr_schedule": SCHEDULE_TEXT[config.schedule],
        "augmentation": ", ".join(AUGMENTATION_TEXT[k] for k in config.augment) or "none",
        "dropout": config.dropout,
        "batch_norm": config.batch_norm,
        "config": config.as_json(),
        "classes": list(data.classes),
        "normalisation": {"mean": _number(data.mean), "std": _number(data.std), "formula": "(pixel/255 - mean) / std"},
        "initialisation": (
            f"He-normal (fan-in, ReLU gain), zero biases, drawn from the training seed {config.seed}"
            if config.kaiming_init else f"PyTorch's default (reset_parameters), seeded with the training seed {config.seed}"
            if config.init == "random" else "the model's current weights (fine-tuning)"
        ),
        "history": history,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "device": "cpu",
    }
    if best is not None:
        metrics["val_accuracy"] = best[0]
        metrics["val_set"] = f"the Shapes val split ({len(data.val_x):,} images)"  # type: ignore[arg-type]
    if model_id == "lenet5":
        metrics["reference"] = LENET5_REFERENCE
    return metrics


def _number(value: Any) -> float | list[float]:
    """A normalisation constant for JSON: one number, or one per channel."""
    return value.flatten().tolist() if isinstance(value, torch.Tensor) else value
