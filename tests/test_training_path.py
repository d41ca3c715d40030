"""One training code path (issue 24): the config's bounds, the learning-rate schedules against their formulas,
and `convscope train` and the Train view's worker process giving bit-identical first epochs (CPU, one thread)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from models import registry
from models.training.config import ConfigError, RunConfig, checked, for_architecture, recipe
from models.training.loop import make_optimizer, make_schedule
from models.training.networks import build_network
from server.cli import main as cli_main
from tests.harness import REPO_ROOT, SHARED_DATA

needs_mnist = pytest.mark.skipif(not (SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz").is_file(),
                                 reason="../shared/data/mnist is not present")


@pytest.mark.parametrize(("changes", "knob"), [
    ({"epochs": 0}, "epochs"), ({"epochs": 51}, "epochs"), ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 513}, "batch_size"), ({"lr": 0.0}, "lr"), ({"lr": 2.0}, "lr"), ({"weight_decay": -1e-3}, "weight_decay"),
    ({"dropout": 0.95}, "dropout"), ({"train_size": 5}, "train_size"), ({"seed": -1}, "seed"),
    ({"optimizer": "rmsprop"}, "optimizer"), ({"schedule": "linear"}, "schedule"), ({"dataset": "cifar10"}, "dataset"),
    ({"augment": ("flip",)}, "augment"), ({"augment": ("blur",)}, "augment"), ({"dataset": "shapes"}, "dataset"),
    ({"init": "pretrained"}, "init"), ({"init": "current", "batch_norm": True}, "init"),
    ({"init": "current", "dropout": 0.5}, "init"),
])
def test_a_knob_out_of_range_is_named(changes, knob):
    with pytest.raises(ConfigError) as caught:
        checked(RunConfig(**{**RunConfig().as_json(), "augment": ("shift",), **changes}))
    assert caught.value.knob == knob and knob in caught.value.message


def test_defaults_and_recipes_are_valid():
    for model_id in ("lenet5", "mnist-shallow", "mnist-deep", "tinyvgg-shapes"):
        assert checked(recipe(model_id))
    assert for_architecture("lenet5", augment=True).augment == ("shift", "rotate", "scale")
    assert for_architecture("lenet5", dataset="fashion-mnist").augment == ("shift", "flip", "scale")
    assert for_architecture("lenet5", augment=False).augment == ()
    assert for_architecture("tinyvgg-shapes").augment == ("flip",)


def test_plain_network_is_the_registry_architecture():
    """Dropout 0 and batch norm off: the bundled layer names; seed 0: build_untrained()'s weights."""
    for model_id in ("lenet5", "mnist-shallow", "mnist-deep"):
        ours, theirs = build_network(recipe(model_id)).state_dict(), registry.get_entry(model_id).build_untrained().state_dict()
        assert list(ours) == list(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    names = dict(build_network(recipe("lenet5", dropout=0.5, batch_norm=True)).named_modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in names.values())
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.5 for m in names.values())


def _rates(config: RunConfig, steps_per_epoch: int) -> list[float]:
    model = torch.nn.Linear(2, 2)
    optimizer = make_optimizer(config, model.parameters())
    schedule = make_schedule(config, optimizer, steps_per_epoch)
    rates = []
    for _ in range(config.epochs * steps_per_epoch):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


def test_schedules_follow_their_formulas():
    lr, epochs, per_epoch = 0.1, 6, 10
    total = epochs * per_epoch
    base = RunConfig(epochs=epochs, lr=lr, optimizer="sgd")
    assert _rates(RunConfig(**{**base.as_json(), "augment": (), "schedule": "constant"}), per_epoch) == [lr] * total
    step = _rates(RunConfig(**{**base.as_json(), "augment": (), "schedule": "step"}), per_epoch)
    every = per_epoch * (epochs // 3)  # ×0.1 every third of the epochs
    assert all(math.isclose(r, lr * 0.1 ** (s // every)) for s, r in enumerate(step))
    cosine = _rates(RunConfig(**{**base.as_json(), "augment": (), "schedule": "cosine"}), per_epoch)
    assert all(math.isclose(r, lr * 0.5 * (1 + math.cos(math.pi * s / total))) for s, r in enumerate(cosine))
    onecycle = _rates(RunConfig(**{**base.as_json(), "augment": (), "schedule": "onecycle"}), per_epoch)
    peak = int(0.2 * total) - 1  # OneCycleLR reaches max_lr at step pct_start·total − 1
    assert math.isclose(max(onecycle), lr) and onecycle.index(max(onecycle)) == peak
    assert math.isclose(onecycle[0], lr / 25)  # its default div_factor
    assert onecycle[-1] < lr / 1000


@needs_mnist
def test_cli_and_the_worker_give_bit_identical_first_epochs(tmp_path):
    """`convscope train` and the Train view's worker process (as the server starts it) train the same
    config and seed to the same first-epoch loss and the same weights, bit for bit (CPU, one thread).
    Dropout and batch norm are on, so the global random stream and the running statistics are covered."""
    knobs = ["--epochs", "1", "--train-size", "192", "--batch-size", "32", "--dropout", "0.3", "--batch-norm",
             "--seed", "7"]
    out = tmp_path / "cli"
    assert cli_main(["train", "lenet5", "--data", str(SHARED_DATA), "--out", str(out), *knobs]) == 0
    cli_weights = torch.load(out / "lenet5.pt", weights_only=True)
    cli_loss = json.loads((out / "lenet5.metrics.json").read_text())["history"][0]["train_loss"]

    config = for_architecture("lenet5", epochs=1, train_size=192, batch_size=32, dropout=0.3, batch_norm=True, seed=7)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    job = {"config": config.as_json(), "run_dir": str(run_dir), "data_dir": str(SHARED_DATA), "threads": 1,
           "device": "cpu", "point_interval_s": 0.4, "maps_interval_s": 1.0}
    worker = subprocess.Popen([sys.executable, "-m", "server.services.training.worker"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"})
    try:
        worker.stdin.write(json.dumps(job) + "\n")
        worker.stdin.flush()  # stdin stays open: its end would mean "stop"
        events = []
        for line in worker.stdout:
            events.append(json.loads(line))
            if events[-1]["type"] in ("done", "failed", "stopped"):
                break
    finally:
        worker.stdin.close()
        worker.wait(timeout=60)
    assert events[-1]["type"] == "done", events[-1]
    epoch = next(e for e in events if e["type"] == "epoch")
    assert epoch["running_loss"] == cli_loss
    run_weights = torch.load(run_dir / "epoch-1.pt", weights_only=True)
    assert list(run_weights) == list(cli_weights)
    assert all(torch.equal(run_weights[k], cli_weights[k]) for k in cli_weights)
    assert sum(e["type"] == "point" for e in events) >= 1 and not list(run_dir.glob(".*"))  # no partial file left


def test_fine_tuning_starts_from_the_bundled_weights():
    for model_id in ("lenet5", "mnist-shallow"):
        ours = build_network(for_architecture(model_id, init="current", dataset="fashion-mnist")).state_dict()
        bundled = registry.get_model(model_id).state_dict()
        assert all(torch.equal(ours[k], bundled[k]) for k in bundled)
    with pytest.raises(ConfigError, match="init"):
        checked(for_architecture("tinyvgg-shapes", init="current", dataset="mnist"))
