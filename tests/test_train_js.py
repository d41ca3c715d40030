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
