"""All server settings in one object, read from CONVSCOPE_* environment variables (and the CLI)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.datasets.image_folder import check_name

if TYPE_CHECKING:  # imported where used: the page served while `convscope serve` loads needs no PyTorch
    import torch

DeviceChoice = Literal["auto", "cpu", "cuda", "mps"]

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVSCOPE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    device: DeviceChoice = "auto"
    default_model: str = "lenet5"
    models_file: Path | None = None  # a TOML file of the user's own models (CONVSCOPE_MODELS_FILE)

    storage_dir: Path = Field(default_factory=lambda: REPO_ROOT / "var" / "images")
    frontend_dir: Path = REPO_ROOT / "frontend"
    data_dir: Path | None = None  # MNIST samples for the gallery; found automatically when None
    # named image folders, NAME → PATH (--image-folder NAME=PATH; CONVSCOPE_IMAGE_FOLDERS='{"pets": "/data/pets"}'):
    # dataset examples (examples.json?dataset=folder:NAME) and training read them
    image_folders: dict[str, Path] = Field(default_factory=dict)
    image_folder_max_files: int = Field(5000, ge=1)  # images listed per folder (the rest are counted, not read)

    max_upload_bytes: int = 20 * 1024 * 1024
    max_body_bytes: int = 1024 * 1024  # any other request body (JSON for the sandbox)
    max_active_uploads: int = 8  # uploads read and decoded at once; more wait, their bodies unread
    max_waiting_uploads: int = 256
    max_image_pixels: int = 50_000_000  # decompression-bomb guard (width × height)
    image_store_budget_bytes: int = 512 * 1024 * 1024
    # where uploaded images live (issue 26): unset = storage_dir on this machine; "redis://host:6379/0" = in Redis,
    # shared by every replica (may be the sessions' Redis; give it maxmemory above the budget); else a folder
    image_store: str | None = None
    max_loaded_models: int = 4
    max_active_work: int = 2  # model computations at once (threads); more queue below
    max_waiting_work: int = 64  # beyond this many queued, answer 503 + Retry-After at once
    work_wait_timeout_s: float = 20.0  # a queued request gives up (503 + Retry-After) after this long
    # places (running + waiting) one client may hold in the cheap pool; then 429. A page never has more than 6
    # requests in flight (a browser's connections per host over HTTP/1.1, shared by its tabs), plus those a view
    # change aborted that are still leaving: 8 keeps normal browsing clear of 429 and a class within the queue
    cheap_work_per_client: int = Field(8, ge=1)
    # Heavy work (measured: labels whose mean run is ≥ heavy_threshold_s; see server/services/work/scheduler.py)
    # runs in its own pool, so it never takes the slots above, which cheap work uses.
    max_active_heavy_work: int = 1
    max_waiting_heavy_work: int = 32
    heavy_work_wait_timeout_s: float = 120.0
    heavy_work_per_client: int = 2  # places (running + waiting) one client may hold in the heavy pool; then 429
    # A client is its address; the students of a live class session each count as one, and together hold at
    # most this many clients' shares (server/services/fairness/identity.py)
    session_client_shares: int = 8
    heavy_threshold_s: float = 0.5
    # Quick work: cheap labels whose mean CPU time is below this may also take one of ``express_work`` extra slots,
    # so they never wait for a slower cheap computation to end (work is not preempted). Measured on the loaded
    # 2-core machine (scheduler.measured(), 20 runs each): LeNet-5's forward pass 31 ms and capture 30 ms,
    # ResNet-18's layer1 capture of a 96 px photo 403 ms. See server/services/work/limiter.py
    quick_threshold_s: float = Field(0.1, ge=0, le=1)
    express_work: int = Field(1, ge=0, le=8)
    batch_window_ms: float = 2.0  # predictions for the same model wait this long to share a forward pass
    max_batch_size: int = 16
    activation_cache_bytes: int = 256 * 1024 * 1024  # layer outputs kept per (model, image), float32
    gradcam_steps_cache_bytes: int = 32 * 1024 * 1024  # Grad-CAM steps (layer output + weights) per key
    # Every per-image / per-model result lives in one kind of cache (server/services/runtime/cache.py), each within
    # its own byte budget. By default: 256 (activations) + 256 (decoded images)
    # + 64 (model inputs) + 16 (logits) + 64 (overviews) + 128 (traces) + 64 (saliency) + 16 (architectures)
    # + 32 (gallery samples) = 896 MiB;
    # loaded models' parameters are bounded apart (loaded_models_bytes and max_loaded_models).
    decoded_image_cache_bytes: int = 256 * 1024 * 1024  # decoded RGB working copies (width × height × 3)
    model_input_cache_bytes: int = 64 * 1024 * 1024  # preprocessed float32 input tensors per (model, image)
    logits_cache_bytes: int = 16 * 1024 * 1024  # one forward result per (model, weights, image)
    kept_graph_cache_bytes: int = 32 * 1024 * 1024  # predictions' autograd graphs for the Grad-CAMs that follow
    overview_cache_bytes: int = 64 * 1024 * 1024  # the overview strip of every layer per (model, image)
    trace_cache_bytes: int = 128 * 1024 * 1024  # a layer's input and output for step-through traces
    saliency_cache_bytes: int = 64 * 1024 * 1024  # saliency maps (display + raw) per key
    experiment_cache_bytes: int = 128 * 1024 * 1024  # ablation head states, attacks, comparisons (issue 22)
    max_probe_patches: int = 64  # occlusion-probe patches in one request (one batched pass)
    probe_batch: int = 16  # occlusion-probe patches per forward pass
    adversarial_max_steps: int = 50  # PGD steps one request may ask for
    architecture_cache_bytes: int = 16 * 1024 * 1024  # architecture tables and receptive fields per model
    sample_cache_bytes: int = 32 * 1024 * 1024  # gallery sample PNGs and the MNIST test arrays
    loaded_models_bytes: int = 4 * 1024 * 1024 * 1024  # parameters of loaded models (VGG-16 alone: 528 MB)
    # glibc's malloc (server/services/memory/allocator.py; measured in bench/bench_soak.py and
    # bench/bench_allocator.py). 0 = glibc's default. A fixed mmap threshold low enough to catch conv outputs
    # (1 MiB was the default until bench_allocator measured it) costs every forward pass its page faults: 1.9×
    malloc_arena_max: int = Field(default=2, ge=0, le=64)
    malloc_mmap_threshold_bytes: int = Field(default=0, ge=0, le=32 * 1024 * 1024)
    malloc_trim_interval_s: float = Field(default=10.0, ge=0, le=3600)

    cors_origins: list[str] = Field(default_factory=list)  # closed unless configured

    # Hardening (issue 10): decoding untrusted images in a child process under hard limits,
    # bytes a decode writes (decoded size × bytes a pixel, see decode_worker.decoded_bytes_per_pixel): its memory
    # and its CPU time, ~3-8 ms per MiB (bench/bench_decode_cost.py), so at most ~0.7 s; a 24 MP JPEG fits
    max_decoded_bytes: int = 96 * 1024 * 1024
    max_jpeg_scans: int = 100  # progressive JPEGs from real encoders have ~10
    decode_cpu_seconds: float = 10.0  # CPU time one decode may take (its process's RLIMIT_CPU)
    decode_memory_bytes: int = 1024 * 1024 * 1024  # memory one decode may add (its process's RLIMIT_AS)
    decode_timeout_s: float = 40.0  # wall clock, then the decoding process is killed
    max_decode_processes: int = 4
    # an upload answers once the next upload's decoder process has started (at most this long), so that the first
    # views of the new image do not share the CPU with a Python start-up
    decode_spare_wait_s: float = Field(2.0, ge=0)
    # request bodies that stall free their slot,
    body_idle_timeout_s: float = 15.0  # no byte of the body for this long: 408
    body_read_timeout_s: float = 300.0  # the whole body, however it trickles in: 408
    max_url_bytes: int = 8192  # path + query string; longer: 414
    shared_answer_max_bytes: int = 8 * 1024 * 1024  # identical GETs at once share answers up to this size
    # and which Host names are answered: empty = loopback names when the connection came in on a loopback
    # address, any name otherwise (a classroom on the LAN); ["*"] = any; else exactly these (and their ports).
    allowed_hosts: list[str] = Field(default_factory=list)
    # Issue 21: what one client address may spend (429 + Retry-After beyond), and whom to believe about it.
    upload_quota_window_s: float = 600.0
    upload_quota_count: int = 200  # uploads per address in the window (0: no cap)
    upload_quota_bytes: int = 256 * 1024 * 1024  # bytes per address in the window: sent or stored, the larger
    max_failed_code_lookups: int = 20  # session codes naming no session, per address and window (0: no cap)
    failed_code_lookup_window_s: float = 60.0
    # Proxies whose X-Forwarded-For / -Proto are believed ("127.0.0.1,10.0.0.0/8", "*" for any); empty:
    # none, the peer's own address is the client's (uvicorn's own default, trusting 127.0.0.1, is undone).
    forwarded_allow_ips: str = ""
    # network overview (every layer as a column of its strongest channels)
    network_max_columns: int = 24  # deeper models are summarised by blocks so that this many fit
    network_channels_per_column: int = 8  # thumbnails per wide column; the rest behind "+N more"
    network_all_channels_up_to: int = 16  # a column this narrow shows every channel
    network_cache_bytes: int = 32 * 1024 * 1024

    # what a channel looks for: dataset examples and feature visualisation (background jobs)
    channel_cache_dir: Path | None = None  # None: "channels" beside storage_dir
    channel_jobs_queue: int = 8  # long jobs waiting for the one background worker; more answer 429
    channel_jobs_per_client: int = 2  # of those, queued or running for one client; more answer 429
    channel_examples_max_k: int = 64  # images kept per channel (examples.json's k is at most this)
    channel_examples_max_pixels: int = 60_000_000  # images × input pixels one dataset pass may cost
    channel_examples_batch: int = 64
    channel_examples_memory_items: int = 4  # (model, weights, dataset) tables kept in memory
    channel_cache_bytes: int = 256 * 1024 * 1024  # on disk, examples and feature visualisations each
    feature_vis_steps: int = 128

    # Models from ONNX and Keras files (issue 25): converted graphs of the models file's Keras entries are kept
    import_cache_dir: Path | None = None  # None: ~/.cache/convscope/imported
    # Dropped into the page (POST /api/models): None = on when the server listens on loopback only, off on a
    # network address unless CONVSCOPE_ALLOW_MODEL_UPLOADS=1
    allow_model_uploads: bool | None = None
    max_model_upload_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    max_uploaded_models_per_client: int = Field(default=3, ge=1)
    uploaded_models_budget_bytes: int = Field(default=1024 * 1024 * 1024, ge=1)  # parameters, every upload together
    uploaded_model_idle_s: float = Field(default=3600.0, gt=0)  # an upload nobody used for this long is dropped
    uploaded_models_dir: Path | None = None  # None: "uploaded-models" beside storage_dir (conversions in flight)
    model_convert_cpu_seconds: float = 120.0  # one conversion's process: CPU time (RLIMIT_CPU),
    model_convert_memory_bytes: int = 3 * 1024 * 1024 * 1024  # memory it may add (RLIMIT_AS),
    model_convert_timeout_s: float = 240.0  # and wall clock, then it is killed
    max_model_convert_processes: int = 1
    max_model_nodes: int = 20_000  # graph nodes an uploaded model may have
    max_model_tensor_bytes: int = 512 * 1024 * 1024  # bytes its tensors may declare in all
    # "Can we trust this map?" (issue 23): model randomisation and deletion/insertion curves
    trust_cache_bytes: int = 128 * 1024 * 1024  # sanity results (every step's maps) and deletion curves
    sanity_max_steps: int = 12  # randomisation steps at most (blocks for deep models, layers for small ones)
    sanity_max_methods: int = 6  # methods one sanity.json may ask for
    deletion_batch_size: int = 21  # images per forward batch of the deletion/insertion curves

    # Classroom sessions (issue 13)
    redis_url: str | None = None  # sessions shared by replicas through Redis; in this process's memory when None
    # Issue 26: with redis_url, background jobs (feature visualisation, dataset examples, sanity checks) go to
    # `convscope worker` processes through RQ; None = on exactly when redis_url is set, False = in this process
    job_queue: bool | None = None
    queue_job_timeout_s: int = Field(3600, ge=10)  # one queued job's time limit on a worker
    queue_result_ttl_s: int = Field(3600, ge=10)  # how long Redis keeps a finished job's result for the replicas
    queue_jobs_running_per_client: int = Field(1, ge=1)  # one client's jobs computing at once; the rest wait
    public_url: str | None = None  # the address students reach (join URL, QR); derived from the request when None
    session_idle_s: float = 2 * 3600  # a session nobody touches (teacher page, submissions) ends after this
    max_sessions: int = 50
    max_sessions_per_address: int = 5  # live sessions started from one client address (0: no such cap)
    max_followers_per_session: int = 200
    max_submissions_per_session: int = 300
    max_submissions_per_student: int = 5
    max_session_state_bytes: int = 4096
    max_submission_name_chars: int = 40
    sse_heartbeat_s: float = 15.0  # a comment line on every quiet event stream, so proxies keep it open
    sse_max_stream_s: float = 600.0  # streams end after this; browsers reconnect with Last-Event-ID
    # `convscope serve` serves the page at once and loads PyTorch and the services behind it (server.startup): an API
    # request that comes meanwhile waits this long for them, then gets 503 `starting` + Retry-After
    startup_wait_s: float = Field(60.0, ge=0)
    shutdown_grace_s: float = 5.0  # `convscope serve` waits at most this long for open requests on shutdown
    # live mode (WS /api/models/{model}/live): each live client computes one frame at a time
    max_live_clients: int = 8  # live sockets open at once; more are refused (close 1013)
    max_live_frame_bytes: int = 2 * 1024 * 1024  # one JPEG/PNG frame; larger ones get a 413 message
    # the largest WebSocket message read at all (uvicorn --ws-max-size; convscope serve passes it): a frame
    # between the two limits gets its 413 message on an open socket, a larger one closes it (1009)
    live_socket_max_bytes: int = 64 * 1024 * 1024
    max_live_frame_pixels: int = 4_000_000  # width × height of one frame (a 1080p webcam frame is 2.1 M)
    live_atlas_max_pixels: int = 160_000  # the layer atlas sent per frame; larger layers are averaged down
    live_idle_timeout_s: float = 120.0  # a live socket that sends no frame for this long is closed
    # PyTorch's intra-op threads (None: its default, one per core). On a CPU shared with other work, 1 avoids
    # OpenMP threads spinning against each other: measured in bench/bench_live.py (see its notes)
    torch_threads: int | None = Field(default=None, ge=1)

    # Training runs (issue 24): each in its own worker process
    max_training_runs: int = Field(1, ge=1)  # runs training at once, every client together; more: 429
    training_runs_per_client: int = Field(1, ge=1)  # active runs one client address may have; more: 429
    training_threads: int = Field(1, ge=1)  # PyTorch threads of one run's process
    training_dir: Path | None = None  # None: "training" beside storage_dir (checkpoints; deleted at shutdown)
    training_checkpoint_budget_bytes: int = Field(512 * 1024 * 1024, ge=1)  # every run's checkpoints together
    max_kept_training_runs: int = Field(20, ge=1)  # finished runs kept (oldest deleted first)
    training_client_grace_s: float = Field(60.0, gt=0)  # a run whose owner left (no stream, no request) ends
    training_max_checkpoints: int = Field(200, ge=1)  # one run's checkpoints (each keeps its pictures in memory
    # and in every snapshot: ~55 KB for TinyVGG, so the disk budget alone let one run hold ~800 MB)
    training_max_run_s: float = Field(3600.0, gt=0)  # a run still going after this ends (one client cannot hold the
    # training slot, max_training_runs, for the whole day: 50 epochs at batch 1 would train for hours)
    training_point_interval_s: float = Field(0.4, gt=0, le=0.5)  # a streamed point at least this often
    training_maps_interval_s: float = Field(1.0, gt=0)  # the probe's feature maps in a point at most this often
    training_folder_max_images: int = Field(2_000, ge=2)  # images one run reads from a folder:NAME (evenly thinned)
    training_folder_max_bytes: int = Field(200 * 2**20, ge=1)  # bytes of image files one run reads from a folder
    # a models-file model trains here when its input is at most 64×64 and it is within both of these
    training_max_parameters: int = Field(5_000_000, ge=1)
    training_max_flops: int = Field(200_000_000, ge=1)  # forward FLOPs of one image (torch's FlopCounterMode)

    @field_validator("image_folders")
    @classmethod
    def _folder_names(cls, folders: dict[str, Path]) -> dict[str, Path]:
        """Names become URL values (``folder:NAME``): letters, digits, ``_`` and ``-`` only, never a path."""
        for name in folders:
            check_name(name)
        return folders


def resolve_device(choice: str) -> torch.device:
    """``auto`` picks CUDA when available, then Apple's MPS, then the CPU."""
    import torch

    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda:0")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for, but PyTorch sees no CUDA device")
        return torch.device("cuda:0")
    if choice == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise RuntimeError("--device mps was asked for, but PyTorch sees no MPS device")
        return torch.device("mps")
    return torch.device("cpu")


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{device.index or 0}"
    return device.type
