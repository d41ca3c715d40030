"""The convscope command: `serve` prints its URL once ready and serves; `models` lists weights states."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import pytest

from server.cli import build_parser, main
from tests.harness import free_port
from tests.readme_support import readme_example


def test_models_command_lists_every_model(capsys) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "lenet5" in out and "bundled" in out and "resnet18" in out


def test_parser_knows_the_api_md_commands() -> None:
    parser = build_parser()
    args = parser.parse_args(["serve", "--host", "0.0.0.0", "--port", "9000", "--device", "cpu", "--model", "mnist-deep"])
    assert (args.host, args.port, args.device, args.model) == ("0.0.0.0", 9000, "cpu", "mnist-deep")
    assert parser.parse_args(["train", "lenet5", "--epochs", "1"]).epochs == 1


def test_serve_prints_url_when_ready_and_answers(tmp_path) -> None:
    port = free_port()
    env = {**os.environ, "CONVSCOPE_STORAGE_DIR": str(tmp_path / "images"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--port", str(port), "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        deadline = time.monotonic() + 120
        line = ""
        while time.monotonic() < deadline:
            line = proc.stdout.readline() if proc.stdout else ""
            if "ConvScope is ready" in line or not line:
                break
        assert f"http://localhost:{port}/?model=lenet5" in line, line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=10) as response:
            assert response.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()


def test_readme_worked_example_works_as_pasted(tmp_path, monkeypatch, capsys) -> None:
    import json
    import runpy

    import numpy as np
    from PIL import Image

    files = readme_example()
    assert set(files) == {"mynets.py", "save_weights.py", "models.toml"}
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mynets", raising=False)
    runpy.run_path(str(tmp_path / "save_weights.py"), run_name="__main__")
    assert main(["models", "--models-file", "models.toml"]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith("small-cnn"))
    assert " local " in line, line
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)).save(tmp_path / "photo.jpg")
    code = main(["explain", "photo.jpg", "--model", "small-cnn", "--models-file", "models.toml", "--out", "explained",
                 "--device", "cpu"])
    assert code == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "explained" / "explain.json").read_text())
    assert report["model"] == "small-cnn" and report["weights"] == "trained" and report["layer"] == "3"
    assert [row["label"] for row in report["classes"]] and len(report["classes"]) == 3
    assert sum(row["probability"] for row in report["classes"]) == pytest.approx(1.0, abs=1e-6)
    for row in report["classes"]:
        assert row["label"] in out
        assert Image.open(tmp_path / "explained" / row["overlay"]).size == (64, 64)


def test_explain_on_efficientnet_names_the_zebra(tmp_path, capsys) -> None:
    import json
    from pathlib import Path

    photo = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "images" / "zebra.jpg"
    if not photo.is_file():
        pytest.skip("offline photos not found")
    assert main(["explain", str(photo), "--model", "efficientnet_lite0", "--top", "2", "--out", str(tmp_path),
                 "--device", "cpu"]) == 0
    assert "1. zebra" in capsys.readouterr().out
    report = json.loads((tmp_path / "explain.json").read_text())
    assert report["classes"][0]["label"] == "zebra" and report["layer"] == "conv_head"
    assert (tmp_path / report["classes"][0]["overlay"]).is_file()


def test_explain_and_models_refuse_clearly(tmp_path, capsys) -> None:
    (tmp_path / "bad.toml").write_text('[[model]]\nid = "x"\ntorchvision = "resnet18"\ncolour = "red"\n')
    assert main(["models", "--models-file", str(tmp_path / "bad.toml")]) == 2
    assert "field 'colour'" in capsys.readouterr().err
    assert main(["explain", str(tmp_path / "missing.png"), "--model", "lenet5"]) == 2
    assert "cannot read" in capsys.readouterr().err
    Image = __import__("PIL.Image", fromlist=["Image"])
    Image.new("RGB", (40, 40)).save(tmp_path / "x.png")
    assert main(["explain", str(tmp_path / "x.png"), "--model", "nope"]) == 2
    assert "no model" in capsys.readouterr().err.lower()
    assert main(["explain", str(tmp_path / "x.png"), "--model", "lenet5", "--layer", "nope", "--out", str(tmp_path / "o")]) == 2
    assert "no layer" in capsys.readouterr().err
