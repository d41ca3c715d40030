"""The app factory: creates the app, adds middleware, static files, error handlers and routers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from models.registry import ModelRegistry
from server import __version__
from server.errors import install_error_handlers
from server.middleware import (
    CoalesceIdenticalGets,
    DisconnectWatch,
    JsonCORSMiddleware,
    NotModifiedMiddleware,
    RequestBodyLimitMiddleware,
    ScopeHeadersMiddleware,
    ServerTimingMiddleware,
    SharedAnswers,
    install_edge_middlewares,
)
from server.openapi import install_openapi
from server.page import page_routes
from server.routers import (
    activations,  # feature maps and learned filters (issue 3)
    channels,  # what a channel looks for: dataset examples and feature visualisation (issue 12)
    experiments,  # ablation, occlusion probe, adversarial examples, two models compared (issue 22)
    filters,
    health,
    image_folders,  # named image folders (issue 20)
    images,
    model_uploads,  # ONNX and Keras models dropped into the page (issue 25)
    models,
    network,  # the network overview and dense-layer detail (issue 12)
    saliency,  # saliency maps (issue 4)
    samples,
    sandbox,  # the sandbox (issue 5)
    sessions,  # classroom sessions (issue 13)
    step_through,  # step-through of one output cell (issue 5)
    training,  # training runs in the page (issue 24)
    trust,  # can we trust this map? model randomisation, deletion/insertion curves (issue 23)
)
from server.routers import gradcam_steps as gradcam_steps_router  # Grad-CAM taken apart (issue 12)
from server.routers import live as live_router  # live mode over a WebSocket (issue 14)
from server.services.wiring import running_services
from server.settings import Settings

ROUTERS = (
    health.router,
    models.router,
    model_uploads.router,
    images.router,
    samples.router,
    activations.router,
    filters.router,
    step_through.router,
    sandbox.router,
    saliency.router,
    gradcam_steps_router.router,
    live_router.router,
    network.router,
    channels.router,
    image_folders.router,
    trust.router,
    sessions.router,
    sessions.join_router,
    experiments.router,
    training.router,
)

# View data whose URL names all it depends on (model, weights, image hash, layer…): identical URLs give
# identical bytes to anyone, so identical requests in flight at once may share one answer. Not the class
# sessions (answers per client, event streams).
# Not GET /api/models itself: it lists a client's own uploaded models (server.services.model_uploads).
SHARED_ANSWER_PREFIXES = ("/api/models/", "/api/images/", "/api/samples", "/api/sandbox/")


def create_app(settings: Settings | None = None, registry: ModelRegistry | None = None) -> FastAPI:
    """The app; ``registry`` (default: the built-in models plus ``settings.models_file``'s) lists its models."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running_services(app, settings, registry):
            yield

    app = FastAPI(title="ConvScope", version=__version__, lifespan=lifespan)
    # Middlewares, innermost first (each add_middleware wraps the ones before it).
    app.add_middleware(ScopeHeadersMiddleware)  # headers dependencies set (X-ConvScope-Weights)
    app.add_middleware(ServerTimingMiddleware)  # Server-Timing: where each request's time went
    app.add_middleware(DisconnectWatch)  # cancels the work of GETs whose client went away
    # identical view GETs in flight at once share one answer (a class opening the same view)
    app.state.shared_answers = SharedAnswers(max_body=settings.shared_answer_max_bytes)
    app.add_middleware(CoalesceIdenticalGets, answers=app.state.shared_answers, prefixes=SHARED_ANSWER_PREFIXES)
    app.add_middleware(NotModifiedMiddleware)  # If-None-Match naming the ETag: 304 (outside: answers stay shared)
    if settings.cors_origins:
        app.add_middleware(JsonCORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"])
    app.add_middleware(RequestBodyLimitMiddleware, limit=settings.max_body_bytes, exempt=("/api/images", "/api/models"),
                       idle_timeout=settings.body_idle_timeout_s, total_timeout=settings.body_read_timeout_s)
    install_edge_middlewares(app, settings)  # request guards, security headers, who the client is
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    install_openapi(app)  # media types, the shared error schema, summaries, tags (issue 15)

    app.router.routes.extend(page_routes(settings))  # / and /static (server.page)
    return app
