"""``convscope serve`` answers at once and loads the rest behind the page.

Importing the full app (PyTorch, torchvision, the model registry, every service) takes seconds, and the page
needs none of it. :class:`StartingApp` is what uvicorn runs: from its first moment it serves ``/`` and ``/static``
(:mod:`server.page`, behind the same edge middlewares as the full app) and ``GET /api/health`` answering
503 ``"status": "starting"`` (so that a load balancer or Compose sends no traffic to a replica not yet ready;
the page itself is served), while a worker thread imports and builds the full app and the event loop then starts its
services (its lifespan: signal handlers belong to the loop's thread). From then on every request goes to the full
app. Any other request (an API call, the live socket) that comes meanwhile waits for it, at most
``Settings.startup_wait_s``, then gets 503 ``starting`` with Retry-After.

When the app cannot start (a broken models file, a device PyTorch does not see), ``on_failure`` is told why; the
CLI then says so and stops the server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from server import __version__
from server.errors import error_response
from server.middleware.security import install_edge_middlewares
from server.page import page_routes
from server.settings import Settings

log = logging.getLogger("convscope")

RETRY_AFTER_S = 2
STARTING_MESSAGE = "ConvScope is still starting (loading PyTorch and the models); try again in a moment."


def _page_paths(path: str) -> bool:
    """What the server answers itself while the full app loads."""
    return path in ("/", "/api/health") or path.startswith("/static/")


class StartingApp:
    """The ASGI app ``convscope serve`` runs: the page at once, the full app (``build()``, run in a worker thread)
    as soon as it has started. ``state`` is ``loading``, ``ready`` or ``failed``."""

    def __init__(self, settings: Settings, build: Callable[[], Any],
                 on_ready: Callable[[], None] = lambda: None,
                 on_failure: Callable[[BaseException], None] = lambda exc: None) -> None:
        self.settings = settings
        self._build = build
        self._on_ready = on_ready
        self._on_failure = on_failure
        self.app: Any = None  # the full app, once its services run
        self.failure: BaseException | None = None
        self.waiting = 0  # requests waiting for the full app now
        self._settled: asyncio.Event | None = None  # set when the app is ready or has failed (made in the loop)
        self._stop: asyncio.Event | None = None
        self._loader: asyncio.Task[None] | None = None
        self._page = self._page_app()

    @property
    def state(self) -> str:
        return "ready" if self.app is not None else "failed" if self.failure is not None else "loading"

    def _page_app(self) -> Starlette:
        async def health(_: Request) -> Response:
            # 503 until the full app runs: a load balancer or orchestrator that checks health (Compose's
            # healthcheck, Kubernetes' readiness probe, an active check) routes no API traffic here yet
            status = "starting" if self.state == "loading" else self.state
            return JSONResponse({"status": status, "device": self.settings.device, "version": __version__,
                                 "error": {"code": "starting", "message": STARTING_MESSAGE}},
                                status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})

        async def not_yet(_: Request) -> Response:
            return error_response(503, "starting", STARTING_MESSAGE, {"Retry-After": str(RETRY_AFTER_S)})

        async def socket_not_yet(websocket: WebSocket) -> None:
            await websocket.close(code=1013, reason="ConvScope is still starting; try again in a moment.")

        routes = [*page_routes(self.settings), Route("/api/health", health, methods=["GET"]),
                  Route("/{path:path}", not_yet, methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
                  WebSocketRoute("/{path:path}", socket_not_yet)]
        page = Starlette(routes=routes)
        install_edge_middlewares(page, self.settings)
        return page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        app = self.app
        if app is None and not (scope["type"] == "http" and _page_paths(scope["path"])):
            app = await self._wait()
        await (app or self._page)(scope, receive, send)

    async def _wait(self) -> ASGIApp | None:
        """The full app, once it runs; None after ``startup_wait_s`` or when it failed."""
        if self._settled is not None:
            self.waiting += 1
            try:
                await asyncio.wait_for(self._settled.wait(), self.settings.startup_wait_s)
            except TimeoutError:
                pass
            finally:
                self.waiting -= 1
        return self.app

    # --- the lifespan: start loading, and stop the full app's services at shutdown --------------------------
    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._settled, self._stop = asyncio.Event(), asyncio.Event()
                self._loader = asyncio.create_task(self._load(), name="convscope-startup")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._shut_down()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _load(self) -> None:
        assert self._settled is not None and self._stop is not None
        try:
            # the imports are the slow part: a worker thread, abandoned if the server stops first
            app = await anyio.to_thread.run_sync(self._build, abandon_on_cancel=True)
            services: AbstractAsyncContextManager[Any] = app.router.lifespan_context(app)
            await services.__aenter__()
        except Exception as exc:  # noqa: BLE001 - any reason the app cannot start is reported, then the server stops
            self.failure = exc
            self._settled.set()
            self._on_failure(exc)
            return
        self.app = app
        self._settled.set()
        self._on_ready()
        try:
            await self._stop.wait()
        finally:
            await services.__aexit__(None, None, None)

    async def _shut_down(self) -> None:
        if self._loader is None or self._stop is None:
            return
        if self.app is None:
            self._loader.cancel()  # still importing or starting: nothing of the full app runs yet
        self._stop.set()
        try:
            await self._loader
        except asyncio.CancelledError:
            pass
