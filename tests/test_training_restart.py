"""Training runs outlive the server (issue 24, single-process mode): a real uvicorn trains one run to its end and
is killed (SIGKILL, no shutdown at all) while a second run trains; a new uvicorn on the same folders lists both,
the finished one as it was and the killed one as failed, "interrupted", and the checkpoints of both answer in
the views with the numbers plain PyTorch gives on the checkpoint files."""

from __future__ import annotations

import os
import signal

import httpx
import psutil
import pytest

from models.datasets import mnist
from tests.conftest import png_bytes
from tests.harness import SHARED_DATA, live_server, wait_until
from tests.training_support import checkpoint_probabilities

pytestmark = pytest.mark.skipif(not (SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz").is_file(),
                                reason="../shared/data/mnist is not present")
SHORT = {"epochs": 1, "train_size": 128, "batch_size": 32}
LONG = {"epochs": 50, "train_size": 512, "batch_size": 32, "checkpoint_every_steps": 8}  # stopped by the kill


def _run(client: httpx.Client, run_id: str) -> dict:
    return client.get(f"/api/training/runs/{run_id}").json()


def test_runs_and_checkpoints_are_listed_again_after_a_restart(tmp_path) -> None:
    training = tmp_path / "training"
    env = {"CONVSCOPE_DATA_DIR": str(SHARED_DATA), "CONVSCOPE_TRAINING_DIR": str(training)}
    with live_server(tmp_path, env=env) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        done = client.post("/api/training/runs", json={**SHORT, "name": "finished"}).json()
        wait_until(lambda: _run(client, done["id"])["state"] == "done", 120, "the short run to finish", 0.1)
        client.patch(f"/api/training/runs/{done['id']}", json={"name": "finished, renamed"})
        killed = client.post("/api/training/runs", json=LONG)
        assert killed.status_code == 201, killed.text
        killed = killed.json()
        wait_until(lambda: len(_run(client, killed["id"])["checkpoints"]) >= 3, 120, "epoch-0 and two step checkpoints",
                   0.1)
        before = _run(client, killed["id"])
        [worker] = [p for p in psutil.Process(server.pid).children(recursive=True)
                    if "server.services.training.worker" in " ".join(p.cmdline())]
        os.kill(server.pid, signal.SIGKILL)  # the server dies: no lifespan, no record written at the end
        psutil.Process(server.pid).wait(timeout=30) if psutil.pid_exists(server.pid) else None
    wait_until(lambda: not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE, 30,
               "the training process to die with its server")

    with live_server(tmp_path, env=env) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        listed = {run["id"]: run for run in client.get("/api/training/runs").json()["runs"]}
        assert set(listed) == {done["id"], killed["id"]}
        assert listed[done["id"]]["state"] == "done" and listed[done["id"]]["name"] == "finished, renamed"
        assert [c["weights"] for c in listed[done["id"]]["checkpoints"]] == ["epoch-0", "epoch-1"]
        after = listed[killed["id"]]
        assert after["state"] == "failed" and after["message"].startswith("Interrupted: the server stopped")
        names = [c["weights"] for c in after["checkpoints"]]
        assert names[: len(before["checkpoints"])] == [c["weights"] for c in before["checkpoints"]]
        assert names[-1] in after["message"]  # "its checkpoints up to step-N are kept"
        assert _run(client, killed["id"])["history"] == before["history"][: len(_run(client, killed["id"])["history"])]
        models = {m["id"]: m for m in client.get("/api/models").json()["models"]}
        assert models[f"run-{done['id']}"]["title"] == "finished, renamed"
        assert f"run-{killed['id']}" in models

        images, _labels = mnist.load_mnist_test(SHARED_DATA)
        digit = images[9001]
        image_id = client.post("/api/images", files={"file": ("d.png", png_bytes(digit), "image/png")}).json()["image_id"]
        for run, body, weights in ((done, SHORT, "epoch-1"), (killed, LONG, names[0]), (killed, LONG, names[-1])):
            answer = client.get(f"/api/models/run-{run['id']}/images/{image_id}/predictions",
                                params={"weights": weights, "top_k": 10})
            assert answer.status_code == 200, answer.text
            assert answer.headers["X-ConvScope-Weights"] == weights
            reference = checkpoint_probabilities(body, training / f"run-{run['id']}" / f"{weights}.pt", digit)
            for row in answer.json()["predictions"]:
                assert row["probability"] == pytest.approx(reference[row["index"]], abs=1e-5)
        # the limit is free again: the interrupted run holds nothing
        again = client.post("/api/training/runs", json=SHORT)
        assert again.status_code == 201, again.text
        wait_until(lambda: _run(client, again.json()["id"])["state"] == "done", 120, "a new run to finish", 0.1)


def test_records_on_disk_are_read_back_tolerantly(tmp_path) -> None:
    """A record from a version with a knob this one dropped is read; a run folder without a record (its server
    died first) and temporary files go; a record this version cannot read is left alone (its checkpoints may
    matter to someone), not listed; a checkpoint whose file is gone is forgotten."""
    import json

    from models.training.config import RunConfig
    from server.services.training import records
    from server.services.training.run import Run

    run = Run("0000abcd", "kept", "10.0.0.1", RunConfig(), tmp_path / "run-0000abcd")
    run.folder.mkdir()
    run.record({"type": "started"})
    for name in ("epoch-0", "epoch-1"):
        run.record({"type": "checkpoint", "weights": name, "epoch": int(name[-1]), "step": 0, "bytes": 10})
    (run.folder / "epoch-0.pt").write_bytes(b"0" * 10)  # epoch-1's file is gone
    (run.folder / ".epoch-1.pt.partial").write_bytes(b"half")
    records.save(run)
    record = json.loads((run.folder / "run.json").read_text())
    record["run"]["config"]["a_dropped_knob"] = 1
    (run.folder / "run.json").write_text(json.dumps(record))
    (tmp_path / "run-00000bad").mkdir()
    (tmp_path / "run-00000bad" / "run.json").write_text("{not json")
    (tmp_path / "run-0000dead").mkdir()

    [loaded] = records.load(tmp_path)
    assert loaded.id == "0000abcd" and loaded.state == "failed" and loaded.checkpoint_names() == ["epoch-0"]
    assert loaded.message == "Interrupted: the server stopped while it trained; its checkpoints up to epoch-0 are kept and usable."
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run-00000bad", "run-0000abcd"]
    assert not list(run.folder.glob(".*.partial"))
    again = json.loads((run.folder / "run.json").read_text())["run"]  # the interruption is recorded
    assert again["state"] == "failed" and [c["weights"] for c in again["checkpoints"]] == ["epoch-0"]
