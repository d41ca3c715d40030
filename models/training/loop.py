"""The one training loop: a :class:`Trainer` made from a :class:`RunConfig` yields one :class:`Step` per
batch, and its caller decides what to do between steps (print a progress bar in ``convscope train``;
stream points, checkpoint, pause or stop in the Train view's worker process). Nothing between two steps
draws random numbers or changes the weights, so the same config and seed give the same numbers whoever
drives the loop (bit-identical on the CPU with the same thread count).

Deterministic given the seed: the initialisation (:func:`build_network`), the shuffling and the
augmentation draw from seeded generators, dropout from the global stream seeded here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.training import data as datasets
from models.training.config import RunConfig
from models.training.networks import build_network

EVAL_BATCH = 1_000
MOMENTUM = 0.9


@dataclass(frozen=True)
class Step:
    epoch: int  # 1-based
    step: int  # 1-based, counted over the whole run
    loss: float  # this batch's mean cross-entropy
    correct: int  # this batch's right answers (training mode, augmented)
    count: int  # images in this batch
    lr: float  # the rate this step used
    epoch_end: bool  # the last step of its epoch


def make_optimizer(config: RunConfig, parameters: Any) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "momentum":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=MOMENTUM, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)


def step_decay_every(config: RunConfig, steps_per_epoch: int) -> int:
    """Step decay multiplies the rate by 0.1 every third of the run's epochs (at least every epoch)."""
    return steps_per_epoch * max(1, config.epochs // 3)


def make_schedule(config: RunConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
                  ) -> torch.optim.lr_scheduler.LRScheduler:
    """The rate per step: constant; step decay (×0.1 every third of the epochs); cosine from ``lr`` to 0;
    one-cycle (20 % warm-up to ``lr``, then cosine down), the bundled recipe."""
    total = config.epochs * steps_per_epoch
    if config.schedule == "onecycle" and total >= 4:
        # OneCycleLR needs at least one step in each phase: tiny runs get a longer warm-up share
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total,
                                                   pct_start=max(0.2, 2.0 / total))
    if config.schedule == "step":
        every = step_decay_every(config, steps_per_epoch)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.1 ** (s // every))
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)


class Trainer:
    def __init__(self, config: RunConfig, data: datasets.TrainingData, device: torch.device | str = "cpu",
                 network: nn.Module | None = None) -> None:
        """``network``: the run's starting network (its plan's, :mod:`models.training.plan`); default
        :func:`build_network` (a bundled architecture on its own dataset)."""
        self.config = config
        self.data = data
        self.device = torch.device(device)
        torch.manual_seed(config.seed)  # dropout draws from the global stream
        model = (network if network is not None else build_network(config)).to(self.device)
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.model = model.to(memory_format=self.memory_format)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.steps_per_epoch = math.ceil(len(data.train_x) / config.batch_size)
        self.total_steps = config.epochs * self.steps_per_epoch
        self.optimizer = make_optimizer(config, self.model.parameters())
        self.schedule = make_schedule(config, self.optimizer, self.steps_per_epoch)

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images → the normalised float batch on the device, as the model reads it."""
        batch = datasets.normalise(images, self.data.mean, self.data.std).to(self.device)
        return batch.contiguous(memory_format=self.memory_format)

    def steps(self) -> Iterator[Step]:
        config, data = self.config, self.data
        n = len(data.train_x)
        step = 0
        for epoch in range(1, config.epochs + 1):
            order = torch.randperm(n, generator=self.generator)
            for k in range(self.steps_per_epoch):
                self.model.train()
                index = order[k * config.batch_size: (k + 1) * config.batch_size]
                images = data.train_x[index].to(torch.float32) / 255.0
                target = data.train_y[index]
                images, target = datasets.augment(images, target, self.generator, config.augment, config.dataset)
                batch = ((images - data.mean) / data.std).to(self.device).contiguous(memory_format=self.memory_format)
                target = target.to(self.device)
                logits = self.model(batch)
                loss = F.cross_entropy(logits, target)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                lr = float(self.optimizer.param_groups[0]["lr"])
                self.optimizer.step()
                self.schedule.step()
                step += 1
                yield Step(epoch, step, loss.item(), int((logits.argmax(1) == target).sum()), len(index), lr,
                           k == self.steps_per_epoch - 1)

    @torch.no_grad()
    def evaluate(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
        """Accuracy, mean cross-entropy and correct count on uint8 images, in eval mode (no dropout, batch norm's
        running statistics); the model is left in eval mode, and the next step puts it back in training."""
        return evaluate(self.model, images, labels, self.data.mean, self.data.std, self.device, self.memory_format)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the weights, contiguous (as a checkpoint file holds them)."""
        return {k: v.detach().to("cpu").contiguous().clone() for k, v in self.model.state_dict().items()}


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float,
             device: torch.device | str = "cpu", memory_format: torch.memory_format = torch.contiguous_format
             ) -> dict[str, Any]:
    model.eval()
    correct, loss_sum = 0, 0.0
    for lo in range(0, len(images), EVAL_BATCH):
        batch = datasets.normalise(images[lo: lo + EVAL_BATCH], mean, std).to(device)
        logits = model(batch.contiguous(memory_format=memory_format))
        target = labels[lo: lo + EVAL_BATCH].to(device)
        loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
        correct += int((logits.argmax(1) == target).sum())
    n = max(1, len(images))
    return {"accuracy": correct / n, "loss": loss_sum / n, "correct": correct, "count": len(images)}
