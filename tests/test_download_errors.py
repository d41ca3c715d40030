"""A failed weights download reads as a sentence for a person (issue 12: no raw '<urlopen error …>')."""

from __future__ import annotations

import socket
import urllib.error
from pathlib import Path

import pytest

from models.registry import HubWeights, WeightsError
from server.services.runtime.download_errors import describe_failure

SOURCE = HubWeights("https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth")


def _wrapped(cause: BaseException) -> WeightsError:
    try:
        try:
            raise cause
        except Exception as inner:
            raise WeightsError(f"downloading {SOURCE.filename} failed: {inner}") from inner
    except WeightsError as exc:
        return exc


@pytest.mark.parametrize(("cause", "says"), [
    (urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution")), "seems to be offline (download.pytorch.org could not be looked up)"),
    (urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")), "download.pytorch.org refused the connection"),
    (urllib.error.URLError(TimeoutError("timed out")), "did not answer in time"),
    (urllib.error.HTTPError(SOURCE.url, 404, "Not Found", None, None), "answered HTTP 404 (Not Found)"),
])
def test_network_failures_become_sentences(cause, says) -> None:
    text = describe_failure(_wrapped(cause), SOURCE, "squeezenet1_1")
    assert says in text
    assert "<urlopen" not in text and "Errno" not in text
    assert "squeezenet1_1 runs with untrained (random) weights" in text and str(SOURCE.cached_path.parent) in text


def test_a_real_refused_download_through_the_job(monkeypatch, tmp_path: Path) -> None:
    from server.services.runtime.weights_download import DownloadJob, WeightsDownloads

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    source = HubWeights("http://127.0.0.1:9/squeezenet1_1-deadbeef.pth")
    job = DownloadJob("squeezenet1_1")
    WeightsDownloads(runtime=None)._run(job, source)  # port 9 (discard) refuses at once
    assert job.state == "failed"
    assert job.error.startswith("ConvScope could not download squeezenet1_1-deadbeef.pth: 127.0.0.1 refused the connection.")


def test_registry_sentences_are_kept(tmp_path: Path) -> None:
    text = describe_failure(WeightsError("x.pth fails its hash check (sha256 starts 00, expected ff)"), SOURCE, "m")
    assert text == "x.pth fails its hash check (sha256 starts 00, expected ff)."
