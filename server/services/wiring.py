"""The services the app runs with: built when the app starts (the lifespan), kept on ``app.state`` for the
dependencies of ``server/deps.py``, and closed when it stops."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
import torch
from fastapi import FastAPI

from models.models_file import app_registry
from models.registry import ModelRegistry
from server import __version__
from server.services.channels import ChannelExamples, FeatureVisualisations
from server.services.classroom import Classroom, SessionLimits, make_backend
from server.services.classroom.pins import SessionPins
from server.services.classroom.predictions import WallPredictions
from server.services.classroom.shutdown import on_stop_signal
from server.services.experiments.service import Experiments
from server.services.feature_maps import ActivationStore, FeatureMaps, LayerOverviews
from server.services.image_folders import ImageFolders
from server.services.images import ImageStore, IsolatedDecoder, UploadGate, decode_limits
from server.services.images.backends import open_backend
from server.services.images.samples import SampleGallery
from server.services.live import LiveHub, LiveLimits
from server.services.memory.allocator import Allocator
from server.services.memory.collector import startup_frozen
from server.services.model_uploads import ModelUploads, UploadLimits, uploads_enabled
from server.services.network import NetworkOverviews
from server.services.quotas import UploadQuota, WindowLimit
from server.services.runtime import ArchitectureCatalog, ModelRuntime, PredictionBatcher, WeightsDownloads
from server.services.runtime.inputs import ModelInputs
from server.services.runtime.outputs import ModelOutputs
from server.services.saliency.gradcam_steps import GradCamStepsService
from server.services.saliency.service import SaliencyMaps
from server.services.step_through import StepThrough
from server.services.training.shared import training_runs
from server.services.trust import TrustChecks
from server.services.work import Scheduler, WorkLimiter, cancel_all, cancel_on_signals
from server.services.work.clients import ClientIdentities
from server.services.work.job_queue import background_jobs
from server.settings import Settings, device_label, resolve_device

log = logging.getLogger("convscope")


@asynccontextmanager
async def running_services(app: FastAPI, settings: Settings, registry: ModelRegistry | None) -> AsyncIterator[None]:
    """Builds every service onto ``app.state`` (models load here, never at import time), runs the app, then
    cancels the work in flight and closes what holds threads, processes or connections."""
    allocator = Allocator(settings.malloc_arena_max, settings.malloc_mmap_threshold_bytes,
                          settings.malloc_trim_interval_s)
    allocator.tune()  # before the endpoint threads make their arenas
    app.state.allocator = allocator
    device = resolve_device(settings.device)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    runtime = ModelRuntime(device, settings.max_loaded_models, ArchitectureCatalog(settings.architecture_cache_bytes),
                           settings.loaded_models_bytes,
                           registry or app_registry(settings.models_file, settings.import_cache_dir))
    runtime.entry(settings.default_model)  # fail fast on a misconfigured default
    app.state.settings = settings
    app.state.runtime = runtime
    app.state.image_store = ImageStore(
        open_backend(settings.image_store, settings.storage_dir), settings.image_store_budget_bytes, settings.max_image_pixels,
        decoded_budget_bytes=settings.decoded_image_cache_bytes,
        decoder=IsolatedDecoder(decode_limits(settings)),
    )
    app.state.downloads = WeightsDownloads(runtime)
    app.state.samples = SampleGallery(settings.sample_cache_bytes, settings.data_dir)
    app.state.architectures = runtime.catalog
    app.state.limiter = WorkLimiter(settings.max_active_work, settings.max_waiting_work,
                                    settings.work_wait_timeout_s, per_client=settings.cheap_work_per_client,
                                    name="model work", express=settings.express_work)
    app.state.heavy_limiter = WorkLimiter(settings.max_active_heavy_work, settings.max_waiting_heavy_work,
                                          settings.heavy_work_wait_timeout_s,
                                          per_client=settings.heavy_work_per_client, name="long computations")
    scheduler = Scheduler(app.state.limiter, app.state.heavy_limiter, settings.heavy_threshold_s,
                          settings.quick_threshold_s)
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
    app.state.step_through = StepThrough(inputs, scheduler.admit, app.state.outputs, settings.trace_cache_bytes)
    app.state.saliency_maps = SaliencyMaps(inputs, scheduler.admit, app.state.outputs,
                                           settings.saliency_cache_bytes)
    app.state.experiments = Experiments(inputs, app.state.outputs, scheduler.admit, settings.experiment_cache_bytes,
                                        settings.probe_batch)
    app.state.gradcam_steps = GradCamStepsService(inputs, scheduler.admit, settings.gradcam_steps_cache_bytes)
    app.state.network_overviews = NetworkOverviews(
        inputs, scheduler.admit, max_columns=settings.network_max_columns,
        per_column=settings.network_channels_per_column, all_up_to=settings.network_all_channels_up_to,
        budget_bytes=settings.network_cache_bytes)
    app.state.upload_gate = UploadGate(settings.max_active_uploads, settings.max_waiting_uploads)
    app.state.upload_quota = UploadQuota(WindowLimit(settings.upload_quota_window_s, settings.upload_quota_count,
                                                     settings.upload_quota_bytes))
    app.state.model_uploads = ModelUploads(
        runtime, settings.uploaded_models_dir or settings.storage_dir.parent / "uploaded-models",
        UploadLimits.from_settings(settings), uploads_enabled(settings))
    app.state.live = LiveHub(
        runtime, app.state.architectures,
        LiveLimits(settings.max_live_frame_bytes, settings.max_live_frame_pixels, settings.live_atlas_max_pixels,
                   settings.live_idle_timeout_s),
        scheduler.admit, settings.max_live_clients,
    )
    # Sync endpoints run in threadpool threads, and queued model work waits in them: every such wait is
    # bounded (the pools' queues, the caches' waiters), so there are always threads left for the rest.
    threads = anyio.to_thread.current_default_thread_limiter()
    waits = (settings.max_active_work + settings.express_work + settings.max_waiting_work + settings.max_active_heavy_work
             + settings.max_waiting_heavy_work)
    threads.total_tokens = max(threads.total_tokens, waits + 64)
    # long background passes (dataset examples, feature visualisation) run in the heavy pool
    app.state.background_jobs = background_jobs(settings)
    app.state.image_folders = ImageFolders(settings.image_folders, settings.image_folder_max_files,
                                           settings.max_image_pixels)
    channel_dir = settings.channel_cache_dir or settings.storage_dir.parent / "channels"
    app.state.channel_examples = ChannelExamples(
        app.state.background_jobs, channel_dir, settings.data_dir,
        max_k=settings.channel_examples_max_k, max_pixels=settings.channel_examples_max_pixels,
        cache_bytes=settings.channel_cache_bytes, batch_size=settings.channel_examples_batch,
        memory_items=settings.channel_examples_memory_items, admit=scheduler.admit, folders=app.state.image_folders)
    app.state.feature_vis = FeatureVisualisations(
        app.state.background_jobs, channel_dir, settings.data_dir,
        steps=settings.feature_vis_steps, cache_bytes=settings.channel_cache_bytes, admit=scheduler.admit)
    app.state.trust = TrustChecks(
        inputs, app.state.saliency_maps, app.state.background_jobs, scheduler.admit,
        budget_bytes=settings.trust_cache_bytes, max_steps=settings.sanity_max_steps,
        batch_size=settings.deletion_batch_size)
    app.state.training = training_runs(runtime, settings)
    backend = make_backend(settings.redis_url)
    classroom = Classroom(backend, SessionLimits.from_settings(settings), WallPredictions(runtime, app.state.outputs),
                          settings.default_model, SessionPins(backend, app.state.image_store))
    await classroom.start()
    app.state.classroom = classroom

    async def session_live(code: str) -> bool:
        return await classroom.backend.get(code) is not None

    app.state.clients = ClientIdentities(session_live, settings.session_client_shares)
    undo_signal = on_stop_signal(classroom.shut_down_streams)  # open event streams must not hold a stop
    log.info("ConvScope %s on %s", __version__, device_label(device))
    # SIGTERM cancels the work in flight first: shutdown takes seconds; start-up's objects stay out of the
    # garbage collector's walks, which held the GIL 0.3 s each (server/services/memory/collector.py)
    with cancel_on_signals(), startup_frozen() as app.state.refreezer:
        try:
            yield
        finally:
            cancel_all()
            app.state.training.close()  # every run's process (its record and checkpoints stay)
            app.state.background_jobs.close()
            allocator.close()
            undo_signal()
            await classroom.aclose()
            app.state.image_store.close()  # the decoder's idle worker process
            app.state.model_uploads.close()  # the converter's idle worker process, the uploaded models
