"""The convscope command: `serve` prints its URL once ready and serves; `models` lists weights states."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

from server.cli import build_parser, main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    port = _free_port()
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
