"""The occlusion probe's POST is cancellable (issue 22: every experiment goes through the scheduler and stops
when nobody waits): a client that goes away — the page aborts its request when a newer set of positions
replaces it — stops the batched passes at the next chunk, and its pool slot comes back. A JSON POST is
watched like a GET; the same body still reaches the endpoint whole."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import numpy as np

from server.main import create_app
from server.settings import Settings
from tests.conftest import png_bytes
from tests.harness import serving, wait_until

PATCHES = 64


def test_a_probe_whose_client_goes_away_stops_at_the_next_chunk(tmp_path: Path) -> None:
    app = create_app(Settings(storage_dir=tmp_path / "images", probe_batch=1))  # one pass per patch
    with serving(app) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
        picture = np.random.default_rng(3).integers(0, 256, (224, 224, 3), dtype=np.uint8)
        image = client.post("/api/images", files={"file": ("x.png", png_bytes(picture), "image/png")}).json()["image_id"]
        path = f"/api/models/resnet18/images/{image}/occlusion-probe?weights=untrained"
        body = {"patches": [{"y": 7 * i % 200, "x": 11 * i % 200, "size": 24, "fill": "grey"} for i in range(PATCHES)]}
        client.get(f"/api/models/resnet18/images/{image}/predictions", params={"weights": "untrained"})  # the clean pass
        passes: list[int] = []
        module = app.state.runtime.load("resnet18", "untrained").module
        handle = module.register_forward_pre_hook(lambda m, args: passes.append(int(args[0].shape[0])))
        try:
            # a JSON body read by the middleware still reaches the endpoint whole: every patch, one pass each
            few = {"patches": body["patches"][:6]}
            answer = client.post(path, json=few)
            assert answer.status_code == 200 and len(answer.json()["results"]) == 6
            assert len(passes) == 6
            passes.clear()
            data = json.dumps(body).encode()
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
            wait_until(lambda: len(passes) > 0, what="the probe to start")  # the probe is under way…
            sock.close()  # …and the page gives it up
            wait_until(lambda: app.state.limiter.active == 0, what="the probe's slot to come back")
            stopped = len(passes)
            time.sleep(0.3)
            assert len(passes) == stopped < PATCHES, "no pass after the checkpoint that saw the client gone"
        finally:
            handle.remove()
