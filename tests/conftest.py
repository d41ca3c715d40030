"""Fixtures shared by every test: an app on a temporary image store, its TestClient, the offline data."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from server.main import create_app
from server.settings import Settings
from tests.harness import REDIS_SERVER, SHARED_DATA, RedisServer, start_redis

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the repository (the offline MNIST files and photos); skip when absent."""
    if not (SHARED_DATA / "images").is_dir():
        pytest.skip(f"offline data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(storage_dir=tmp_path / "images")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def module_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app per test module, for modules whose tests only read."""
    settings = Settings(storage_dir=tmp_path_factory.mktemp("images"))
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def upload() -> Callable[[TestClient, bytes], str]:
    """Upload bytes through the API and return the image id."""

    def _upload(test_client: TestClient, data: bytes, filename: str = "image.png") -> str:
        response = test_client.post("/api/images", files={"file": (filename, data, "application/octet-stream")})
        assert response.status_code == 201, response.text
        return response.json()["image_id"]

    return _upload


def load_npy(content: bytes) -> np.ndarray:
    return np.load(io.BytesIO(content), allow_pickle=False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Browser tests run last: sync Playwright keeps an asyncio loop running in the main thread for the rest
    of the session, which would break later tests that start their own loop (anyio.run, asyncio.run)."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port for a test module, stopped by pid afterwards."""
    if not Path(REDIS_SERVER).exists():
        pytest.skip("redis-server is not installed (apt install redis-server)")
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()
