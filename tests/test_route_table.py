"""The lifespan builds FastAPI's routing state before the first request (server/route_table.py)."""

from __future__ import annotations

from server.main import create_app
from server.route_table import build_route_table


def included(app) -> list:  # noqa: ANN001
    return [route for route in app.router.routes if hasattr(route, "effective_candidates")]


def test_every_operation_is_built_and_a_second_build_makes_nothing_new() -> None:
    app = create_app()
    assert included(app), "FastAPI no longer builds routes lazily: server/route_table.py has nothing to do"
    built = build_route_table(app)
    operations = sum(len(methods) for methods in app.openapi()["paths"].values())
    assert built >= operations > 50
    tables = [route._effective_candidates for route in included(app)]
    assert build_route_table(app) == built
    assert all(route._effective_candidates is table for route, table in zip(included(app), tables))


def test_the_running_app_built_its_table_in_the_lifespan(client) -> None:  # noqa: ANN001 - tests/conftest.py
    assert all(route._effective_candidates_version is not None for route in included(client.app))
