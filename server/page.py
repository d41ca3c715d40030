"""The page: ``/`` (index.html with the version and the default model) and its static files under ``/static``.

Plain Starlette routes, importing neither FastAPI's routers nor PyTorch, so that ``convscope serve`` serves the
page while the rest of the app still loads (:mod:`server.startup`); the full app mounts the same routes."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from server import __version__
from server.settings import Settings


def page_routes(settings: Settings) -> list[BaseRoute]:
    """``GET /`` and ``/static``; neither is part of the API schema."""
    templates = Jinja2Templates(directory=str(settings.frontend_dir / "templates"))

    async def index(request: Request) -> Response:
        return templates.TemplateResponse(
            request, "index.html", {"version": __version__, "default_model": settings.default_model}
        )

    return [Route("/", index, methods=["GET"], include_in_schema=False),
            Mount("/static", StaticFiles(directory=settings.frontend_dir / "static"), name="static")]
