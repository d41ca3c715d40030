"""The deployment, for real on loopback (issue 26 §3): Debian's nginx (deploy/nginx/proxy.conf), redis-server,
three uvicorn replicas sharing sessions, images (CONVSCOPE_IMAGE_STORE=redis://…) and the job queue, and two
``convscope worker`` processes. Each part is started by the module's fixture and stopped by process id.

Figures (the kill -9 and rolling-restart numbers) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.classroom_support import sse_events
from tests.deploy.deployment import NGINX_ADDRESS, Deployment, Worker, distinct_ports
from tests.harness import NGINX, REDIS_SERVER, SHARED_DATA, Nginx, UvicornProcess, start_redis, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(REDIS_SERVER).exists(), reason="redis-server is not installed (apt install redis-server)"),
    pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed (apt install nginx)"),
]
FEATURE_VIS = "/api/models/lenet5/layers/features.3/channels/2/feature-vis"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    folder = tmp_path_factory.mktemp("deployment")
    redis = start_redis(folder)
    env = {"CONVSCOPE_REDIS_URL": redis.url, "CONVSCOPE_IMAGE_STORE": redis.url,
           "CONVSCOPE_FORWARDED_ALLOW_IPS": NGINX_ADDRESS, "CONVSCOPE_SSE_HEARTBEAT_S": "0.5",
           "CONVSCOPE_MAX_SESSIONS_PER_ADDRESS": "2", "CONVSCOPE_MAX_SUBMISSIONS_PER_STUDENT": "100",
           "CONVSCOPE_HEAVY_WORK_PER_CLIENT": "2", "CONVSCOPE_FEATURE_VIS_STEPS": "3000",
           "CONVSCOPE_CHANNEL_CACHE_DIR": str(folder / "channels"), "CONVSCOPE_TRAINING_DIR": str(folder / "training")}
    *ports, nginx_port = distinct_ports(4)
    replicas = [UvicornProcess(f"replica-{i}", port, env, folder) for i, port in enumerate(ports)]
    workers = [Worker(f"worker-{i}", {"CONVSCOPE_REDIS_URL": redis.url, "CONVSCOPE_TRAINING_DIR": str(folder / "training")},
                      folder) for i in range(2)]
    nginx = Nginx(nginx_port, folder, ports, bind=NGINX_ADDRESS)
    try:
        for part in (*replicas, *workers):
            part.start()  # all at once: they load in parallel
        for replica in replicas:
            replica.wait(timeout=300)  # five processes load torch at once on this 2-core machine
        nginx.start()
        _wait_for_workers(redis.url, len(workers))
        deployment = Deployment(nginx, replicas, workers, redis.url)
        yield deployment
        print("\n" + "\n".join(f"{name}: {value}" for name, value in deployment.figures.items()))
    finally:
        nginx.stop()
        for replica in replicas:  # all at once, then wait for each
            if replica.process is not None and replica.process.poll() is None:
                replica.process.terminate()
        for part in (*workers, *replicas):
            part.stop()
        redis.stop()


def _wait_for_workers(redis_url: str, count: int) -> None:
    import redis
    from rq import Worker as RqWorker

    with redis.Redis.from_url(redis_url) as connection:
        deadline = time.monotonic() + 120
        while RqWorker.count(connection=connection) < count:
            assert time.monotonic() < deadline, "the workers did not register"
            time.sleep(0.2)


def _client(base_url: str, address: str | None = None) -> httpx.Client:
    """A kept-alive client; ``address``: the loopback address it connects from (who it is to nginx)."""
    transport = httpx.HTTPTransport(local_address=address) if address else None
    return httpx.Client(base_url=base_url, timeout=60, transport=transport)


def _upload(client: httpx.Client, name: str) -> str:
    data = (SHARED_DATA / "images" / name).read_bytes()
    response = client.post("/api/images", files={"file": (name, data)})
    assert response.status_code == 201, response.text
    return response.json()["image_id"]


def test_an_upload_through_nginx_is_served_identically_by_every_replica(deployment: Deployment) -> None:
    with _client(deployment.nginx.url) as front:
        image_id = _upload(front, "dog.jpg")
        urls = [f"/api/images/{image_id}"]
        for model, conv, layer in (("lenet5", "features.3", "features.4"), ("tinyvgg-shapes", "block2.0", "block2.1")):
            base = f"/api/models/{model}/images/{image_id}"
            urls += [f"{base}/input.npy", f"{base}/layers/{layer}/activations.npy", f"{base}/predictions",
                     f"{base}/saliency.npy?method=gradcam", f"{base}/saliency.npy?method=gradient&target=1",
                     f"/api/models/{model}/layers/{conv}/weights.npy"]
        via_nginx = {}
        for url in urls:
            response = front.get(url)
            assert response.status_code == 200, (url, response.text)
            via_nginx[url] = response.content
        assert np.load(__import__("io").BytesIO(via_nginx[urls[1]])).dtype == np.float32
    for replica in deployment.replicas:
        with _client(replica.url) as direct:
            for url in urls:
                response = direct.get(url)
                assert response.status_code == 200, (replica.name, url, response.text)
                assert response.content == via_nginx[url], (replica.name, url)  # byte for byte


def test_replicas_believe_nginx_only_so_two_students_are_two_clients(deployment: Deployment) -> None:
    """Sessions started per address (counted in Redis, across replicas) and long jobs per client (RQ's
    per-client limit), through nginx from two addresses; a forged X-Forwarded-For sent straight to a
    replica is not believed."""
    with _client(deployment.nginx.url, "127.0.0.10") as ada, _client(deployment.nginx.url, "127.0.0.11") as bea:
        made = [ada.post("/api/sessions").status_code for _ in range(3)]
        assert made == [201, 201, 429], made
        assert bea.post("/api/sessions").status_code == 201  # another student, another client
        with _client(deployment.replicas[0].url, "127.0.0.10") as forged:
            response = forged.post("/api/sessions", headers={"X-Forwarded-For": "127.0.0.99"})
            assert response.status_code == 429  # still 127.0.0.10: the replica believes nginx only
        # long jobs: two per client (CONVSCOPE_HEAVY_WORK_PER_CLIENT), then 429 for that client only
        started = [ada.post(f"{FEATURE_VIS}?seed={seed}") for seed in (101, 102, 103)]
        assert [r.status_code for r in started] == [202, 202, 429], [r.text for r in started]
        assert started[2].json()["error"]["code"] == "too_many_jobs_for_client"
        assert bea.post(f"{FEATURE_VIS}?seed=104").status_code == 202
        for seed, who in ((101, ada), (102, ada), (104, bea)):
            assert who.delete(f"{FEATURE_VIS}?seed={seed}").status_code == 200
        _wait(lambda: all(ada.get(f"{FEATURE_VIS}.json?seed={s}").json()["state"] == "cancelled" for s in (101, 102, 104)),
              "the jobs were not cancelled")


def _wait(condition, what: str, timeout: float = 30.0) -> float:
    """``wait_until`` (the harness's), returning the seconds it took."""
    start = time.monotonic()
    wait_until(condition, timeout=timeout, what=what, poll_s=0.05)
    return time.monotonic() - start


class Student(threading.Thread):
    """Follows the session through nginx, reconnecting with Last-Event-ID as a browser does."""

    def __init__(self, url: str, code: str, address: str) -> None:
        super().__init__(daemon=True)
        self.url, self.code, self.address = url, code, address
        self.versions: list[int] = []
        self.upstreams: list[str] = []
        self.reconnects = 0
        self.errors: list[str] = []
        self.connected_at: list[float] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        last_id = None
        with _client(self.url, self.address) as client:
            while not self.stopped.is_set():
                headers = {"Last-Event-ID": last_id} if last_id else {}
                try:
                    with client.stream("GET", f"/api/sessions/{self.code}/events", headers=headers) as response:
                        if response.status_code != 200:
                            raise httpx.TransportError(f"status {response.status_code}")
                        self.upstreams.append(response.headers.get("x-upstream", ""))
                        self.connected_at.append(time.monotonic())
                        for event in sse_events(response.iter_lines()):
                            if self.stopped.is_set():
                                return
                            if event.get("event") == "state":
                                last_id = event.get("id", last_id)
                                self.versions.append(int(event["id"]))
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc)[:120])
                if not self.stopped.is_set():
                    self.reconnects += 1
                    time.sleep(0.2)


def test_kill_9_one_replica_mid_class(deployment: Deployment) -> None:
    teacher_replica, victim = deployment.replicas[0], deployment.replicas[1]
    front_url = deployment.nginx.url
    with _client(teacher_replica.url) as teacher:
        created = teacher.post("/api/sessions", json={"state": {"model": "lenet5", "view": "overview"}}).json()
        code, auth = created["code"], {"Authorization": f"Bearer {created['teacher_token']}"}
        students = [Student(front_url, code, f"127.0.0.{20 + i}") for i in range(6)]
        for student in students:
            student.start()
        _wait(lambda: all(s.versions for s in students), "not every student received the state")
        assert any(victim.url.rsplit(":", 1)[1] in "".join(s.upstreams) for s in students), \
            "no stream went to the replica to be killed: nginx did not spread them"
        # submissions and the live socket, through nginx
        acknowledged: list[str] = []
        attempted: list[str] = []
        with _client(front_url, "127.0.0.20") as student_http:
            image_id = _upload(student_http, "cat.jpg")
            _live_frame_through_nginx(deployment, image_id)

            def submit_some(count: int) -> None:
                for _ in range(count):
                    name = f"s{len(attempted)}"
                    attempted.append(name)
                    for _try in range(5):  # a page resends a submission whose answer it never got
                        try:
                            response = student_http.post(f"/api/sessions/{code}/submissions",
                                                         json={"image_id": image_id, "name": name},
                                                         headers={"X-ConvScope-Student": "student-ada-1"})
                        except httpx.HTTPError:
                            continue
                        if response.status_code == 201:
                            acknowledged.append(name)
                            break

            submit_some(5)
            kill_thread = threading.Thread(target=submit_some, args=(10,))
            kill_thread.start()
            killed_at = time.monotonic()
            victim.stop(signal.SIGKILL)
            kill_thread.join(60)
            version = teacher.put(f"/api/sessions/{code}/state", headers=auth,
                                  json={"state": {"model": "lenet5", "view": "layers"}}).json().get("version")
            waited = _wait(lambda: all(version in s.versions for s in students),
                           "every student's stream to carry on after the kill")
            recovered = time.monotonic() - killed_at
            for student in students:
                student.stopped.set()
            wall = teacher.get(f"/api/sessions/{code}/submissions", headers=auth).json()["submissions"]
            teacher.delete(f"/api/sessions/{code}", headers=auth)
        names = [item["name"] for item in wall]
        assert set(acknowledged) <= set(names), set(acknowledged) - set(names)  # no acknowledged submission lost
        assert set(names) <= set(attempted) and all(item["predictions"] for item in wall)
        assert len(acknowledged) == len(attempted) == 15
        reconnects = [min(t for t in s.connected_at if t > killed_at) - killed_at for s in students
                      if any(t > killed_at for t in s.connected_at)]
        assert reconnects, "no student's stream was on the killed replica"
        deployment.figures["kill -9 mid-class"] = (
            f"{len(reconnects)} of {len(students)} students' streams were on the killed replica and reconnected "
            f"through nginx in {max(reconnects):.2f} s at most; every stream had the teacher's next change "
            f"(version {version}) {waited:.2f} s after it was made, {recovered:.2f} s after the kill; "
            f"{len(acknowledged)}/{len(attempted)} submissions acknowledged, all on the wall ({len(names)} items)")
    victim.start()
    victim.wait()


def _live_frame_through_nginx(deployment: Deployment, image_id: str) -> None:
    from websockets.sync.client import connect

    with _client(deployment.nginx.url) as front:
        png = front.get(f"/api/images/{image_id}").content
        expected = front.get(f"/api/models/lenet5/images/{image_id}/predictions").json()["predictions"]
    ws_url = deployment.nginx.url.replace("http://", "ws://") + "/api/models/lenet5/live"
    with connect(ws_url, max_size=2**24, open_timeout=30) as socket:
        assert json.loads(socket.recv(timeout=60))["ready"]["model"] == "lenet5"
        socket.send(png)
        answer = json.loads(socket.recv(timeout=60))
    assert [p["index"] for p in answer["predictions"]] == [p["index"] for p in expected[: len(answer["predictions"])]]


def test_rolling_restart_under_steady_gets_fails_no_request(deployment: Deployment) -> None:
    with _client(deployment.nginx.url) as front:
        image_id = _upload(front, "zebra.jpg")
    urls = itertools.cycle([f"/api/models/lenet5/images/{image_id}/predictions",
                            f"/api/models/lenet5/images/{image_id}/input.npy", "/api/models", "/api/health"])
    results: list[int] = []
    done = threading.Event()

    def load() -> None:
        with _client(deployment.nginx.url) as client:
            while not done.is_set():
                try:
                    results.append(client.get(next(urls)).status_code)
                except httpx.HTTPError:
                    results.append(-1)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    timings = []
    started = time.monotonic()
    try:
        for replica in deployment.replicas:
            stop_s = replica.stop(signal.SIGTERM)
            begin = time.monotonic()
            replica.start()
            replica.wait()
            timings.append(f"{replica.name} stopped in {stop_s:.1f} s, back in {time.monotonic() - begin:.1f} s")
    finally:
        done.set()
        for thread in threads:
            thread.join(30)
    elapsed = time.monotonic() - started
    failed = [code for code in results if code != 200]
    deployment.figures["rolling restart"] = (f"{len(results)} GETs in {elapsed:.1f} s ({len(results) / elapsed:.0f}/s), "
                                             f"{len(failed)} failed; " + "; ".join(timings))
    assert results and failed == [], failed[:20]


def test_a_worker_killed_mid_job_retries_it_then_fails_it_clearly(deployment: Deployment) -> None:
    url = f"{FEATURE_VIS}?seed=7"
    with _client(deployment.nginx.url, "127.0.0.30") as client:
        assert client.post(url).status_code == 202

        def running_horse() -> int | None:
            status = client.get(f"{url.replace('feature-vis', 'feature-vis.json')}").json()
            if status["state"] != "running" or status["progress"]["done"] < 5:
                return None
            horses = [pid for worker in deployment.workers for pid in worker.children()]
            return horses[0] if len(horses) == 1 else None

        status_url = url.replace("feature-vis", "feature-vis.json")
        horse: list[int] = []

        def horse_found() -> bool:
            horse[:] = [pid for pid in [running_horse()] if pid]
            return bool(horse)

        for attempt in range(2):
            _wait(horse_found, f"a job computing (attempt {attempt + 1})", 60)
            os.kill(horse[0], signal.SIGKILL)  # the process computing the job, as an OOM kill would
            if attempt == 0:  # retried once: queued or running again, and says so
                _wait(lambda: client.get(status_url).json().get("retried") == 1, "the job to be retried", 30)
        seen = _wait(lambda: client.get(status_url).json()["state"] == "failed", "the job did not fail", 30)
        status = client.get(status_url).json()
        assert "worker process computing it died (signal 9)" in status["error"], status
        again = client.post(url)  # asking again starts it anew
        assert again.status_code == 202 and again.json()["state"] in ("queued", "running")
        assert client.delete(url).json()["state"] in ("cancelled", "running", "queued")
        _wait(lambda: client.get(status_url).json()["state"] == "cancelled", "the job was not cancelled", 30)
    deployment.figures["worker killed mid-job"] = (f"first kill -9 of the work horse: job retried on a worker; "
                                                   f"second: failed {seen:.2f} s later with the reason")
