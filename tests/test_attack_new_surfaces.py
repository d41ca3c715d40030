"""The holes an attack on the newest surfaces found (training runs, experiments, the live patch message,
background jobs), each checked against a real uvicorn: a class opening the Train view at once, a junk
Last-Event-ID, a live text message that is no patch, a probe with many blurred patch sizes, and a classmate
stopping a shared computation."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from torchvision.transforms.functional import gaussian_blur

from server.services.experiments.occlusion_probe import blurred
from tests.conftest import png_bytes
from tests.harness import SHARED_DATA, LiveServer, client_at, live_server, start_redis, wait_until
from tests.training_support import workers

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz").is_file(),
                                                   reason="../shared/data/mnist is not present")]

DIGIT = png_bytes(np.full((28, 28), 200, np.uint8))
PHOTO = (SHARED_DATA / "images" / "zebra.jpg").read_bytes() if (SHARED_DATA / "images").is_dir() else DIGIT
TINY_RUN = {"epochs": 1, "train_size": 64, "batch_size": 32}
MAX_RUN_S = 4  # the server's training_max_run_s here (3600 by default)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("attack")
    with live_server(tmp, env={"CONVSCOPE_DATA_DIR": str(SHARED_DATA), "CONVSCOPE_TRAINING_DIR": str(tmp / "training"),
                               "CONVSCOPE_TRAINING_MAX_RUN_S": str(MAX_RUN_S)}) as live:
        yield live


def test_a_class_opening_the_train_view_at_once_starts_one_spare_worker(server: LiveServer) -> None:
    """Each look at the runs readies a spare training process; 12 laptops asking at once started 12 Python
    processes (PyTorch imported in each, ~500 MB together per few) before the fix, and most were killed again."""
    assert workers(server.pid) == [], "a fresh server has no training process yet"
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], len(workers(server.pid)))
            time.sleep(0.02)

    clients = [client_at(f"127.0.0.{10 + i}", server.url) for i in range(12)]
    barrier = threading.Barrier(len(clients))
    codes: list[int] = []

    def look(index: int) -> None:
        barrier.wait()
        # distinct URLs (a junk query is ignored) so that the in-flight coalescing does not make them one request
        codes.append(clients[index].get("/api/training/runs", params={"n": index}).status_code)

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=look, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    done.set()
    watcher.join()
    for client in clients:
        client.close()
    assert codes == [200] * len(clients)
    assert peak[0] == 1, f"{peak[0]} training processes were started for one spare"
    assert len(workers(server.pid)) == 1


def _first_event(response: httpx.Response) -> str:
    """The kind of a stream's first event."""
    return next(line[7:] for line in response.iter_lines() if line.startswith("event: "))


JUNK_IDS = [b"\xb2", b"1\xb9"]  # "²", "1¹" in the header's Latin-1


def test_a_last_event_id_that_is_no_number_is_no_id(server: LiveServer) -> None:
    """``"²".isdigit()`` is true and ``int("²")`` fails: a reconnecting stream with such a Last-Event-ID got a 500
    (class sessions) or a broken stream and a traceback (training runs). It is no id: the whole state comes."""
    with client_at("127.0.0.31", server.url) as teacher:
        session = teacher.post("/api/sessions", json={})
        assert session.status_code == 201, session.text
        for junk in JUNK_IDS:
            with teacher.stream("GET", f"/api/sessions/{session.json()['code']}/events",
                                headers={"Last-Event-ID": junk}) as response:
                assert response.status_code == 200, response.read()
                first = next(line for line in response.iter_lines() if line.startswith("data: "))
                assert "state" in json.loads(first[6:])

    with client_at("127.0.0.32", server.url) as owner:
        started = owner.post("/api/training/runs", json=TINY_RUN)
        assert started.status_code == 201, started.text
        run_id = started.json()["id"]
        try:  # (and an id past the run's last event, which left the stream silent: only heartbeats came)
            for junk in [*JUNK_IDS, b"99999999999999999999"]:
                with owner.stream("GET", f"/api/training/runs/{run_id}/events", timeout=20,
                                  headers={"Last-Event-ID": junk}) as response:
                    assert response.status_code == 200
                    assert _first_event(response) == "snapshot"
        finally:
            owner.delete(f"/api/training/runs/{run_id}")


def test_a_run_ends_after_the_longest_a_run_may_take(server: LiveServer) -> None:
    """One run trains at a time on this server, and 50 epochs at batch size 1 train for hours: one student held
    the training slot (everyone else: 429 training_busy) for as long as they kept a tab open."""
    hog = {"epochs": 50, "train_size": 8000, "batch_size": 1}
    with client_at("127.0.0.36", server.url) as owner:
        started = owner.post("/api/training/runs", json=hog)
        assert started.status_code == 201, started.text
        run_id = started.json()["id"]
        try:
            wait_until(lambda: owner.get(f"/api/training/runs/{run_id}").json()["state"] == "stopped", 120,
                       f"the run to be stopped after {MAX_RUN_S} s", poll_s=0.25)
            again = owner.post("/api/training/runs", json=TINY_RUN)
            assert again.status_code == 201, again.text  # the slot is free again
            owner.delete(f"/api/training/runs/{again.json()['id']}")
        finally:
            owner.delete(f"/api/training/runs/{run_id}")


def test_a_run_may_not_ask_for_more_checkpoints_than_a_run_keeps(server: LiveServer) -> None:
    """Every checkpoint keeps the pictures of its moment (TinyVGG: ~55 KB of first-layer maps) in the server's
    memory and in every snapshot a page reads; the disk budget alone allowed ~15,000 of them in one run."""
    many = {"architecture": "tinyvgg-shapes", "epochs": 1, "train_size": 1000, "batch_size": 1,
            "checkpoint_every_steps": 1}
    with client_at("127.0.0.37", server.url) as owner:
        refused = owner.post("/api/training/runs", json=many)
        try:
            assert refused.status_code == 422, refused.text
            message = refused.json()["error"]["message"]  # 1,000 steps and the epochs' own
            assert message.startswith("checkpoint_every_steps: 100") and "at most 200" in message, message
        finally:
            if refused.status_code == 201:
                owner.delete(f"/api/training/runs/{refused.json()['id']}")


def test_a_live_text_message_that_is_no_patch_gets_an_error_and_the_socket_stays_open(server: LiveServer) -> None:
    """JSON nested deeper than Python's stack raised RecursionError and dropped the socket without a close;
    a 15 MiB JSON text was parsed on the event loop (every request waited ~1 s). Now: 400 and 413 messages."""
    from websockets.sync.client import connect

    url = server.url.replace("http://", "ws://") + "/api/models/lenet5/live"
    with connect(url, origin=server.url, max_size=None, open_timeout=60) as ws:
        assert "ready" in json.loads(ws.recv(timeout=60))
        ws.send("[" * 1020)  # deeper than Python's recursion limit, within the 1,024 characters read
        error = json.loads(ws.recv(timeout=30))["error"]
        assert error["status"] == 400 and error["code"] == "binary_frames_expected", error
        ws.send('{"patch": null, "pad": "' + "x" * 100_000 + '"}')
        error = json.loads(ws.recv(timeout=30))["error"]
        assert error["status"] == 413 and error["message"].startswith("patch:"), error
        ws.send(json.dumps({"patch": {"y": 2, "x": 3, "size": 8, "fill": "grey"}}))
        ws.send(DIGIT)
        answer = json.loads(ws.recv(timeout=60))
        assert answer["frame"] == 1 and answer["patch"] == {"y": 2, "x": 3, "height": 8, "width": 8, "fill": "grey"}


def test_the_probe_blur_is_torchvisions_blur_in_two_passes() -> None:
    """The patch blur equals torchvision's Gaussian blur (the reference), at a cost that grows with the kernel's
    side, not its area: 64 blurred patch sizes on a 224×224 input cost 92 s (unadmitted) before."""
    torch.manual_seed(0)
    cases = {(1, 3, 224, 224): (2, 12, 40), (1, 1, 28, 28): (2, 5, 12, 28, 4096), (1, 3, 64, 48): (5, 40, 100, 4096)}
    for shape, sizes in cases.items():  # (the reference's 2-D kernel takes seconds for large patches on 224 px)
        pixels = torch.rand(shape)
        for size in sizes:
            sigma = max(1.0, size / 4.0)
            kernel = 2 * int(np.ceil(2 * sigma)) + 1
            limit = 2 * min(shape[-2:]) - 1
            kernel = min(kernel, limit if limit % 2 else limit - 1)
            reference = gaussian_blur(pixels, [kernel, kernel], [sigma, sigma])
            assert torch.allclose(blurred(pixels, size), reference, atol=3e-5), (shape, size)
    pixels = torch.rand(1, 3, 224, 224)
    with FlopCounterMode(display=False) as counter:
        blurred(pixels, 224)
    kernel = 225
    area = 2 * 3 * 224 * 224 * kernel * kernel  # one 2-D pass
    assert counter.get_total_flops() < area / 20, counter.get_total_flops() / area


def _server_cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def test_a_probe_with_many_blurred_sizes_costs_about_what_grey_patches_cost(server: LiveServer) -> None:
    """64 blurred patches of 64 sizes on EfficientNet-Lite0 cost 48-63 s of the server CPU (92 s answered), each
    size's blur a 2-D Gaussian of up to 225×225 taps computed before admission; the same patches in grey cost
    6 s. Measured (on the 16 largest sizes) as the server process's CPU seconds, blur against grey in one run."""
    with client_at("127.0.0.33", server.url) as http:
        uploaded = http.post("/api/images", files={"file": ("zebra.jpg", PHOTO)})
        assert uploaded.status_code == 201, uploaded.text
        base = f"/api/models/efficientnet_lite0/images/{uploaded.json()['image_id']}"
        assert http.get(f"{base}/predictions").status_code == 200  # the model is loaded

        def cpu_of(fill: str) -> float:
            patches = [{"y": size - 209, "x": 0, "size": size, "fill": fill} for size in range(209, 225)]
            before = _server_cpu_s(server.pid)
            answer = http.post(f"{base}/occlusion-probe", json={"patches": patches}, timeout=600)
            assert answer.status_code == 200, answer.text
            assert len(answer.json()["results"]) == len(patches)
            return _server_cpu_s(server.pid) - before

        grey, blur = cpu_of("grey"), cpu_of("blur")
    assert blur < 4 * grey, f"blurred patches cost {blur:.1f} CPU s, grey ones {grey:.1f}"


def test_only_the_client_that_started_a_shared_computation_can_stop_it(server: LiveServer) -> None:
    """A classmate's DELETE stopped a feature visualisation (or sanity check) someone else started, and the
    others waiting for it lost its progress; looped, it never finished. Now 403 ``not_your_job``."""
    _check_stop_is_the_starters(server.url)


def _check_stop_is_the_starters(url: str) -> None:
    path = "/api/models/efficientnet_lite0/layers/blocks.3.0.conv_pw/channels/5/feature-vis"  # many seconds
    with client_at("127.0.0.34", url) as starter, client_at("127.0.0.35", url) as classmate:
        started = starter.post(path, params={"seed": 11})
        assert started.status_code in (200, 202), started.text
        assert started.json()["state"] in ("queued", "running"), started.json()
        refused = classmate.delete(path, params={"seed": 11})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "not_your_job", refused.text
        assert classmate.get(f"{path}.json", params={"seed": 11}).json()["state"] in ("queued", "running", "done")
        stopped = starter.delete(path, params={"seed": 11})
        assert stopped.status_code == 200, stopped.text
        wait_until(lambda: starter.get(f"{path}.json", params={"seed": 11}).json()["state"] in ("cancelled", "done"),
                   60, "the starter's stop to take effect", poll_s=0.1)


def test_only_the_starter_can_stop_a_queued_job_in_redis(tmp_path: Path) -> None:
    """The same through the RQ job queue (no worker runs here, so the job stays queued until stopped)."""
    redis = start_redis(tmp_path)
    try:
        with live_server(tmp_path, env={"CONVSCOPE_REDIS_URL": redis.url}) as queued:
            _check_stop_is_the_starters(queued.url)
    finally:
        redis.stop()
