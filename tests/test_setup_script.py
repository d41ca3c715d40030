"""scripts/setup asks pip only when something changed: a second run with the same pyproject.toml returns at once
(scripts/serve runs it before every start), a changed pyproject.toml or a --test install after a plain one
installs again. Run on a copy of the script and pyproject.toml, with a .venv whose python records pip calls and
passes everything else to this interpreter: no real install happens."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

FAKE_PYTHON = """#!/bin/sh
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
  echo "$*" >> "{log}"
  touch "{bin}/convscope" && chmod +x "{bin}/convscope"
  exit 0
fi
exec "{real}" "$@"
"""


def _checkout(tmp: Path) -> tuple[Path, Path]:
    (tmp / "scripts").mkdir()
    shutil.copy2(REPO_ROOT / "scripts" / "setup", tmp / "scripts" / "setup")
    shutil.copy2(REPO_ROOT / "pyproject.toml", tmp / "pyproject.toml")
    bin_dir = tmp / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp / "pip-calls.log"
    fake = bin_dir / "python"
    fake.write_text(FAKE_PYTHON.format(log=log, bin=bin_dir, real=sys.executable))
    fake.chmod(0o755)
    return tmp / "scripts" / "setup", log


def _pip_calls(setup: Path, log: Path, *args: str) -> list[str]:
    before = log.read_text().splitlines() if log.exists() else []
    subprocess.run([str(setup), *args], check=True, env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
                   capture_output=True, timeout=60)
    after = log.read_text().splitlines() if log.exists() else []
    return after[len(before):]


def test_second_run_does_not_call_pip(tmp_path) -> None:
    setup, log = _checkout(tmp_path)
    first = _pip_calls(setup, log)
    assert any("install -q -e ." in call for call in first), first
    assert _pip_calls(setup, log) == []


def test_changed_pyproject_installs_again(tmp_path) -> None:
    setup, log = _checkout(tmp_path)
    _pip_calls(setup, log)
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"tqdm>=4.66",', '"tqdm>=4.66",\n    "rich>=13",'))
    assert any("install -q -e ." in call for call in _pip_calls(setup, log))
    assert _pip_calls(setup, log) == []


def test_test_extras_after_plain_install_and_not_the_other_way(tmp_path) -> None:
    setup, log = _checkout(tmp_path)
    _pip_calls(setup, log)
    assert any(".[test]" in call for call in _pip_calls(setup, log, "--test"))
    assert _pip_calls(setup, log, "--test") == []
    assert _pip_calls(setup, log) == []  # the test install includes the plain one


def test_force_and_a_missing_command_install_again(tmp_path) -> None:
    setup, log = _checkout(tmp_path)
    _pip_calls(setup, log)
    assert _pip_calls(setup, log, "--force")
    (tmp_path / ".venv" / "bin" / "convscope").unlink()  # the stamp alone does not prove the install
    assert _pip_calls(setup, log)
    assert _pip_calls(setup, log) == []


def test_check_says_whether_a_run_would_install_and_installs_nothing(tmp_path) -> None:
    setup, log = _checkout(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable}
    assert subprocess.run([str(setup), "--check"], env=env, timeout=60).returncode == 1
    assert not log.exists()  # no pip call
    _pip_calls(setup, log)
    assert subprocess.run([str(setup), "--check"], env=env, timeout=60).returncode == 0
    assert subprocess.run([str(setup), "--check", "--test"], env=env, timeout=60).returncode == 1
    assert len(log.read_text().splitlines()) == 2  # the one install: pip upgraded, the project installed
