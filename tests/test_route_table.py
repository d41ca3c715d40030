"""The lifespan builds FastAPI's routing state before the first request (server/route_table.py)."""

from __future__ import annotations

import pytest

from server.main import create_app
from server.route_table import build_route_table


def included(app) -> list:  # noqa: ANN001
    """FastAPI's lazily built router nodes; a FastAPI that builds its routes eagerly has none (nothing to test)."""
    nodes = [route for route in app.router.routes if hasattr(route, "effective_candidates")]
    if not nodes:
        pytest.skip("this FastAPI builds its routes eagerly: server/route_table.py has nothing to do")
    return nodes


def test_every_operation_is_built_and_a_second_build_makes_nothing_new() -> None:
    app = create_app()
    nodes = included(app)
    built = build_route_table(app)
    operations = sum(len(methods) for methods in app.openapi()["paths"].values())
    assert built >= operations > 50
    tables = [getattr(route, "_effective_candidates", None) for route in nodes]
    assert build_route_table(app) == built
    assert all(getattr(route, "_effective_candidates", None) is table for route, table in zip(nodes, tables))


def test_the_running_app_built_its_table_in_the_lifespan(client) -> None:  # noqa: ANN001 - tests/conftest.py
    assert all(getattr(route, "_effective_candidates_version", None) is not None for route in included(client.app))
