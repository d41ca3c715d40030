"""The Train view's pure module (frontend/static/js/train/run-state.js) under Node: a run rebuilt from its
event stream, and "What am I looking at?" saying overfitting with the run's own numbers, computed here."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import js_support

MODULE = Path(__file__).resolve().parents[1] / "frontend" / "static" / "js" / "train" / "run-state.js"
pytestmark = pytest.mark.skipif(js_support.NODE is None, reason="node is not installed")


def run_js(body: str, arg: object) -> object:
    return js_support.run_js(MODULE, body, arg)


SNAPSHOT = {"id": "ab12cd34", "model": "run-ab12cd34", "state": "running", "config": {
    "epochs": 30, "augment": [], "dropout": 0.0, "schedule": "onecycle"}, "history": [], "points": [],
    "snapshots": [], "checkpoints": [], "latest": {}, "info": {"train_size": 500, "heldout_size": 2000}}
ROWS = [{"epoch": e, "step": 16 * e, "loss": loss, "accuracy": a, "val_loss": vl, "val_accuracy": va, "lr": 1e-3}
        for e, loss, a, vl, va in ((1, 1.2, 0.70, 1.1, 0.68), (2, 0.4, 0.93, 0.5, 0.86), (3, 0.1, 0.99, 0.55, 0.87),
                                (4, 0.02, 1.0, 0.6, 0.875))]
EVENTS = [["snapshot", SNAPSHOT], *(["epoch", row] for row in ROWS),
          ["checkpoint", {"weights": "epoch-4", "epoch": 4, "step": 64, "filters": None}],
          ["point", {"step": 64, "lr": 2.5e-4, "loss": 0.02}], ["stopped", {}]]
REPLAY = "arg.reduce((run, [type, data]) => m.applyEvent(run, type, data), null)"


def test_the_stream_rebuilds_the_run() -> None:
    run = run_js(REPLAY, EVENTS)
    assert run["history"] == ROWS and run["state"] == "stopped"
    assert run["checkpoints"] == [{"epoch": 4, "step": 64, "weights": "epoch-4"}] and run["points"][-1]["step"] == 64


def test_the_explanation_uses_the_runs_own_numbers() -> None:
    facts, lines = run_js(f"(() => {{ const run = {REPLAY}; return [m.runFacts(run), m.explainRun(run)]; }})()", EVENTS)
    last = ROWS[-1]
    assert facts["gap"] == pytest.approx(last["accuracy"] - last["val_accuracy"]) and facts["overfitting"] is True
    assert facts["bestEpoch"] == 4 and facts["valRising"] is True  # held-out loss 0.5 → 0.55 → 0.6
    text = dict(lines)
    assert "Training accuracy 100.0%, held-out 87.5%: a gap of 12.5 points." == text["After epoch 4"]
    assert "500 training images" in text["Overfitting"] and "augmentation (now: none)" in text["Overfitting"]
    # no gap, no overfitting sentence
    close = [["snapshot", {**SNAPSHOT, "history": [{**ROWS[0], "accuracy": 0.9, "val_accuracy": 0.89}]}]]
    assert "Overfitting" not in dict(run_js(f"m.explainRun({REPLAY})", close))


def test_an_epoch_zero_checkpoint_is_the_untrained_network() -> None:
    """A run whose checkpoints start at epoch-0 (the initial weights, with the untrained network measured):
    the scrubber calls it "untrained, epoch 0", the explanation counts epochs of training only and says how
    the untrained network did against chance; a run without it (older runs) reads as before."""
    zero_row = {"epoch": 0, "step": 0, "loss": 2.31, "accuracy": 0.1, "val_loss": 2.30, "val_accuracy": 0.095, "lr": 1e-4}
    zero = {"weights": "epoch-0", "epoch": 0, "step": 0, "filters": None}
    events = [["snapshot", {**SNAPSHOT, "info": {**SNAPSHOT["info"], "classes": [str(d) for d in range(10)]}}],
              ["epoch", zero_row], ["checkpoint", zero], *(["epoch", row] for row in ROWS)]
    labels, facts, lines = run_js(
        f"(() => {{ const run = {REPLAY}; return [[m.checkpointLabel(run.snapshots[0]), "
        "m.checkpointLabel({weights: 'epoch-1', epoch: 1, step: 1600})], m.runFacts(run), m.explainRun(run)]; })()", events)
    assert labels == ["untrained, epoch 0", "epoch-1 (step 1,600)"]
    assert facts["epochs"] == 4 and facts["untrainedVal"] == pytest.approx(0.095) and facts["bestEpoch"] == 4
    text = dict(lines)
    assert "After epoch 4" in text and "After epoch 0" not in text
    assert text["Before training"] == ("With its random initial weights (epoch 0) the network got 9.5% of the held-out "
                                       "images right; guessing among 10 classes gets 10.0%.")
    assert "Before training" not in dict(run_js(f"m.explainRun({REPLAY})", EVENTS))


COMPARE = Path(__file__).resolve().parents[1] / "frontend" / "static" / "js" / "train" / "compare.js"


def compare_js(body: str, arg: object) -> object:
    return js_support.run_js(COMPARE, body, arg)


def a_run(name: str, rows: list[tuple[float, float]], **config: object) -> dict:
    """A finished run as the page holds it: one history row per (training, held-out) accuracy pair."""
    base = {"architecture": "lenet5", "dataset": "mnist", "train_size": 500, "augment": [], "dropout": 0.0,
            "batch_norm": False, "optimizer": "adamw", "lr": 0.003, "schedule": "onecycle", "weight_decay": 1e-4,
            "batch_size": 64, "epochs": 30, "init": "random", "seed": 0}
    history = [{"epoch": e, "step": 8 * e, "accuracy": a, "val_accuracy": v, "loss": 0.1, "val_loss": 0.3}
               for e, (a, v) in enumerate(rows, start=1)]
    return {"name": name, "config": {**base, **config}, "history": history, "info": {"train_size": 500}}


PLAIN = a_run("without", [(0.80, 0.78), (0.97, 0.88), (1.0, 0.896), (1.0, 0.897)])
AUGMENTED = a_run("with", [(0.70, 0.72), (0.90, 0.88), (0.946, 0.921)], augment=["shift", "rotate", "scale"], dropout=0.5)


def test_two_runs_compared_with_their_own_numbers() -> None:
    facts, diffs, lines = compare_js("[m.compareFacts(arg[0], arg[1]), m.configDifferences(arg[0], arg[1]), "
                                     "m.explainComparison(arg[0], arg[1])]", [PLAIN, AUGMENTED])
    # the last epoch both reached is 3: each run's own row there
    assert facts["epoch"] == 3
    assert facts["mine"]["gap"] == pytest.approx(1.0 - 0.896) and facts["theirs"]["gap"] == pytest.approx(0.946 - 0.921)
    assert diffs == [["augmentation", "none", "shift, rotate, scale"], ["dropout p", "0", "0.5"]]
    text = dict(lines)
    assert text["At epoch 3"] == ("“without”: training 100.0%, held-out 89.6%, a gap of 10.4 points. “with”: training "
                                  "94.6%, held-out 92.1%, a gap of 2.5 points.")
    narrower = f"{100 * ((1.0 - 0.896) - (0.946 - 0.921)):.1f}"
    assert text["What it did"].startswith(f"“with” overfits less: its gap is {narrower} points narrower. “with” does "
                                          "better on images neither has seen (held-out 92.1% against 89.6%).")
    assert "Two knobs differ (augmentation, dropout p)" in text["What it did"]
    assert "augmentation: none in “without”, shift, rotate, scale in “with”" in text["What differs"]


def test_one_knob_apart_or_none_yet() -> None:
    dropout_only = a_run("dropout", [(0.9, 0.89)], dropout=0.5)
    one = dict(compare_js("m.explainComparison(arg[0], arg[1])", [PLAIN, dropout_only]))
    assert "Only the dropout p differs" in one["What it did"] and "At epoch 1" in one
    seed_only = dict(compare_js("m.explainComparison(arg[0], arg[1])", [PLAIN, a_run("seed 1", [(0.8, 0.78)], seed=1)]))
    assert "Only the seed differs: this is how much two runs vary by chance" in seed_only["What it did"]
    fresh = dict(compare_js("m.explainComparison(arg[0], arg[1])", [PLAIN, a_run("fresh", [])]))
    assert "What it did" not in fresh and fresh["So far"].startswith("“fresh” has not finished an epoch yet")
    same = dict(compare_js("m.explainComparison(arg[0], arg[1])", [PLAIN, a_run("again", [(0.8, 0.78)])]))
    assert same["What differs"].startswith("Nothing: the same knobs and seed")
