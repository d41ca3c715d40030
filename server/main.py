"""The app factory: creates the app, adds middleware, static files, error handlers and routers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import anyio.to_thread
import torch
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from models.models_file import app_registry
from models.registry import ModelRegistry
from server import __version__
from server.coalesce import CoalesceIdenticalGets, SharedAnswers
from server.errors import install_error_handlers
from server.openapi import install_openapi
from server.responses import NotModifiedMiddleware, ScopeHeadersMiddleware
from server.routers import (  # feature maps and learned filters (issue 3)  # step-through traces and the sandbox (issue 5)
    activations,
    channels,  # what a channel looks for: dataset examples and feature visualisation (issue 12)
    filters,
    health,
    images,
    models,
    network,  # the network overview and dense-layer detail (issue 12)
    saliency,  # saliency maps (issue 4)
    samples,
    sandbox,
    sessions,  # classroom sessions (issue 13)
    trace,
)
from server.routers import gradcam_steps as gradcam_steps_router  # Grad-CAM taken apart (issue 12)
from server.routers import live as live_router  # live mode over a WebSocket (issue 14)
from server.security import (
    JsonCORSMiddleware,
    RequestBodyLimitMiddleware,
    SecurityHeadersMiddleware,
    install_request_guards,
)
from server.services import samples as sample_gallery
from server.services.activations import ActivationStore
from server.services.architecture import ArchitectureCatalog
from server.services.background_jobs import BackgroundJobs
from server.services.batching import PredictionBatcher
from server.services.cancel import cancel_all
from server.services.channel_examples import ChannelExamples
from server.services.classroom import Classroom, SessionLimits, make_backend
from server.services.classroom.predictions import WallPredictions
from server.services.classroom.shutdown import on_stop_signal
from server.services.conv_trace import Traces
from server.services.fairness.identity import ClientIdentities
from server.services.feature_maps import FeatureMaps
from server.services.feature_vis import FeatureVisualisations
from server.services.image_decode import IsolatedDecoder, decode_limits
from server.services.image_store import ImageStore
from server.services.layer_overview import LayerOverviews
from server.services.live import LiveHub
from server.services.live_frame import LiveLimits
from server.services.memory.allocator import Allocator
from server.services.model_inputs import ModelInputs
from server.services.model_runtime import ModelRuntime
from server.services.network_overview import NetworkOverviews
from server.services.predictions import ModelOutputs
from server.services.saliency.gradcam_steps import GradCamStepsService
from server.services.saliency.service import SaliencyMaps
from server.services.scheduler import DisconnectWatch, Scheduler, cancel_on_signals
from server.services.upload import UploadGate
from server.services.weights_download import WeightsDownloads
from server.services.work_limiter import WorkLimiter
from server.settings import Settings, device_label, resolve_device

log = logging.getLogger("convscope")

ROUTERS = (
    health.router,
    models.router,
    images.router,
    samples.router,
    activations.router,
    filters.router,
    trace.router,
    sandbox.router,
    saliency.router,
    gradcam_steps_router.router,
    live_router.router,
    network.router,
    channels.router,
    sessions.router,
    sessions.join_router,
)

# View data whose URL names all it depends on (model, weights, image hash, layer…): identical URLs give
# identical bytes to anyone, so identical requests in flight at once may share one answer. Not the class
# sessions (answers per client, event streams).
SHARED_ANSWER_PREFIXES = ("/api/models", "/api/images/", "/api/samples", "/api/sandbox/")


def create_app(settings: Settings | None = None, registry: ModelRegistry | None = None) -> FastAPI:
    """The app; ``registry`` (default: the built-in models plus ``settings.models_file``'s) lists its models."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        allocator = Allocator(settings.malloc_arena_max, settings.malloc_mmap_threshold_bytes,
                              settings.malloc_trim_interval_s)
        allocator.tune()  # before the endpoint threads make their arenas
        app.state.allocator = allocator
        device = resolve_device(settings.device)
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        runtime = ModelRuntime(device, settings.max_loaded_models, ArchitectureCatalog(settings.architecture_cache_bytes),
                               settings.loaded_models_bytes, registry or app_registry(settings.models_file))
        runtime.entry(settings.default_model)  # fail fast on a misconfigured default
        app.state.settings = settings
        app.state.runtime = runtime
        app.state.image_store = ImageStore(
            settings.storage_dir, settings.image_store_budget_bytes, settings.max_image_pixels,
            decoded_budget_bytes=settings.decoded_image_cache_bytes,
            decoder=IsolatedDecoder(decode_limits(settings)),
        )
        app.state.downloads = WeightsDownloads(runtime)
        sample_gallery.cache.budget_bytes = settings.sample_cache_bytes
        app.state.architectures = runtime.catalog
        app.state.limiter = WorkLimiter(settings.max_active_work, settings.max_waiting_work,
                                        settings.work_wait_timeout_s, name="model work")
        app.state.heavy_limiter = WorkLimiter(settings.max_active_heavy_work, settings.max_waiting_heavy_work,
                                              settings.heavy_work_wait_timeout_s,
                                              per_client=settings.heavy_work_per_client, name="long computations")
        scheduler = Scheduler(app.state.limiter, app.state.heavy_limiter, settings.heavy_threshold_s)
        app.state.scheduler = scheduler
        app.state.batcher = PredictionBatcher(scheduler, settings.batch_window_ms / 1000, settings.max_batch_size)
        inputs = ModelInputs(app.state.image_store, settings.model_input_cache_bytes)
        app.state.inputs = inputs
        app.state.outputs = ModelOutputs(inputs, app.state.batcher, settings.logits_cache_bytes,
                                        settings.kept_graph_cache_bytes)
        app.state.activations = ActivationStore(settings.activation_cache_bytes)
        app.state.layer_overviews = LayerOverviews(settings.overview_cache_bytes)
        app.state.feature_maps = FeatureMaps(app.state.activations, app.state.layer_overviews, runtime.catalog,
                                             inputs, scheduler.admit, app.state.outputs)
        app.state.traces = Traces(inputs, scheduler.admit, app.state.outputs, settings.trace_cache_bytes)
        app.state.saliency_maps = SaliencyMaps(inputs, scheduler.admit, app.state.outputs,
                                               settings.saliency_cache_bytes)
        app.state.gradcam_steps = GradCamStepsService(inputs, scheduler.admit, settings.gradcam_steps_cache_bytes)
        app.state.network_overviews = NetworkOverviews(
            inputs, partial(scheduler.admit, "network"), max_columns=settings.network_max_columns,
            per_column=settings.network_channels_per_column, all_up_to=settings.network_all_channels_up_to,
            budget_bytes=settings.network_cache_bytes)
        app.state.upload_gate = UploadGate(settings.max_active_uploads, settings.max_waiting_uploads)
        app.state.live = LiveHub(
            runtime, app.state.architectures,
            LiveLimits(settings.max_live_frame_bytes, settings.max_live_frame_pixels, settings.live_atlas_max_pixels,
                       settings.live_idle_timeout_s),
            lambda label: scheduler.admit(label, "cheap"), settings.max_live_clients,
        )
        # Sync endpoints run in threadpool threads, and queued model work waits in them: every such wait is
        # bounded (the pools' queues, the caches' waiters), so there are always threads left for the rest.
        threads = anyio.to_thread.current_default_thread_limiter()
        waits = (settings.max_active_work + settings.max_waiting_work + settings.max_active_heavy_work
                 + settings.max_waiting_heavy_work)
        threads.total_tokens = max(threads.total_tokens, waits + 64)
        # long background passes (dataset examples, feature visualisation) run in the heavy pool
        long_work = partial(scheduler.admit, "channels/background", "heavy")
        app.state.background_jobs = BackgroundJobs(settings.channel_jobs_queue, per_client=settings.channel_jobs_per_client)
        channel_dir = settings.channel_cache_dir or settings.storage_dir.parent / "channels"
        app.state.channel_examples = ChannelExamples(
            app.state.background_jobs, channel_dir, settings.data_dir,
            max_k=settings.channel_examples_max_k, max_pixels=settings.channel_examples_max_pixels,
            cache_bytes=settings.channel_cache_bytes, batch_size=settings.channel_examples_batch,
            memory_items=settings.channel_examples_memory_items, admit=long_work)
        app.state.feature_vis = FeatureVisualisations(
            app.state.background_jobs, channel_dir, settings.data_dir,
            steps=settings.feature_vis_steps, cache_bytes=settings.channel_cache_bytes, admit=long_work)
        classroom = Classroom(make_backend(settings.redis_url), SessionLimits.from_settings(settings),
                              WallPredictions(runtime, app.state.outputs), settings.default_model)
        await classroom.start()
        app.state.classroom = classroom

        async def session_live(code: str) -> bool:
            return await classroom.backend.get(code) is not None

        app.state.clients = ClientIdentities(session_live, settings.session_client_shares)
        undo_signal = on_stop_signal(classroom.shut_down_streams)  # open event streams must not hold a stop
        log.info("ConvScope %s on %s", __version__, device_label(device))
        with cancel_on_signals():  # SIGTERM cancels the work in flight first: shutdown takes seconds
            try:
                yield
            finally:
                cancel_all()
                app.state.background_jobs.close()
                allocator.close()
                undo_signal()
                await classroom.aclose()
                app.state.image_store.close()  # the decoder's idle worker process

    app = FastAPI(title="ConvScope", version=__version__, lifespan=lifespan)
    # Middlewares, innermost first (each add_middleware wraps the ones before it).
    app.add_middleware(ScopeHeadersMiddleware)  # headers dependencies set (X-ConvScope-Weights)
    app.add_middleware(DisconnectWatch)  # cancels the work of GETs whose client went away
    # identical view GETs in flight at once share one answer (a class opening the same view)
    app.state.shared_answers = SharedAnswers(max_body=settings.shared_answer_max_bytes)
    app.add_middleware(CoalesceIdenticalGets, answers=app.state.shared_answers, prefixes=SHARED_ANSWER_PREFIXES)
    app.add_middleware(NotModifiedMiddleware)  # If-None-Match naming the ETag: 304 (outside: answers stay shared)
    if settings.cors_origins:
        app.add_middleware(JsonCORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"])
    app.add_middleware(RequestBodyLimitMiddleware, limit=settings.max_body_bytes, exempt=("/api/images",),
                       idle_timeout=settings.body_idle_timeout_s, total_timeout=settings.body_read_timeout_s)
    install_request_guards(app, settings)  # origin, HEAD, URL length, Host (issue 10)
    app.add_middleware(SecurityHeadersMiddleware)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    install_openapi(app)  # media types, the shared error schema, summaries, tags (issue 15)

    app.mount("/static", StaticFiles(directory=settings.frontend_dir / "static"), name="static")
    templates = Jinja2Templates(directory=str(settings.frontend_dir / "templates"))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request) -> HTMLResponse:
        return templates.TemplateResponse(
            request, "index.html", {"version": __version__, "default_model": settings.default_model}
        )

    return app
