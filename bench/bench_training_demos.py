"""The Train view's teaching demos, run through the real service (issue 24's "done when"):

1. LeNet-5 from scratch on MNIST with the defaults (the bundled recipe: AdamW, one-cycle, augmentation, the
   8,000 offline training digits, 10 epochs): its held-out accuracy (MNIST test[8000:]) against the bundled
   model's, measured on the same 2,000 digits. Goal: within 2 points.
2. Overfitting: 500 training images, no augmentation, no dropout, against the same 500 with augmentation and
   dropout 0.5: the gap between training accuracy (measured in eval mode on the training images) and held-out
   accuracy at the end, and the held-out accuracy itself.

Minutes of CPU; run it by hand:  .venv/bin/python bench/bench_training_demos.py [--epochs-small 30]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient  # noqa: E402
from harness import SHARED_DATA  # the one harness (bench/harness.py)

from models import registry  # noqa: E402
from server.main import create_app  # noqa: E402
from server.settings import Settings  # noqa: E402


def train(client: TestClient, body: dict) -> dict:
    started = time.perf_counter()
    run = client.post("/api/training/runs", json=body)
    assert run.status_code == 201, run.text
    run_id = run.json()["id"]
    with client.stream("GET", f"/api/training/runs/{run_id}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("event: end"):
                break
    detail = client.get(f"/api/training/runs/{run_id}").json()
    detail["seconds"] = time.perf_counter() - started
    return detail


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs-small", type=int, default=30)
    parser.add_argument("--skip-full", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(storage_dir=Path(tmp) / "images", data_dir=SHARED_DATA, training_dir=Path(tmp) / "runs")
        with TestClient(create_app(settings)) as client:
            if not args.skip_full:
                full = train(client, {"architecture": "lenet5"})
                last = full["history"][-1]
                bundled = registry.get_entry("lenet5").weights.metrics()
                print(f"LeNet-5 from scratch, defaults ({full['config']['epochs']} epochs, {full['seconds']:.0f} s): "
                      f"held-out {100 * last['val_accuracy']:.2f}% vs bundled {100 * bundled['test_accuracy']:.2f}% "
                      f"on {bundled['test_set']}: {100 * (last['val_accuracy'] - bundled['test_accuracy']):+.2f} points "
                      "(goal: within 2)")
            rows = []
            for label, knobs in (("no augmentation, no dropout", {"augment": False, "dropout": 0.0}),
                                 ("augmentation + dropout 0.5", {"augment": True, "dropout": 0.5})):
                run = train(client, {"architecture": "lenet5", "train_size": 500, "epochs": args.epochs_small, **knobs})
                last = run["history"][-1]
                best = max(row["val_accuracy"] for row in run["history"])
                rows.append({"run": label, "train_accuracy": last["accuracy"], "heldout_accuracy": last["val_accuracy"],
                             "gap_points": 100 * (last["accuracy"] - last["val_accuracy"]),
                             "best_heldout": best, "heldout_loss": last["val_loss"], "seconds": round(run["seconds"])})
                print(f"500 images, {args.epochs_small} epochs, {label}: training {100 * last['accuracy']:.1f}%, "
                      f"held-out {100 * last['val_accuracy']:.1f}% (gap {rows[-1]['gap_points']:.1f} points; "
                      f"held-out loss {last['val_loss']:.3f}; {run['seconds']:.0f} s)")
            print(json.dumps(rows))


if __name__ == "__main__":
    main()
