"""The ``convscope`` command: serve, models, train, download, explain."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from server.hosts import is_loopback
    from server.settings import Settings
    from server.startup import StartingApp

    overrides = {"host": args.host, "port": args.port, "device": args.device}
    if args.model:
        overrides["default_model"] = args.model
    if args.models_file:
        overrides["models_file"] = args.models_file
    if args.forwarded_allow_ips or args.proxy_headers:
        overrides["forwarded_allow_ips"] = args.forwarded_allow_ips or "127.0.0.1,::1"
    if args.ws_max_size:
        overrides["live_socket_max_bytes"] = args.ws_max_size
    if args.image_folder:
        from models.datasets.image_folder import ImageFolderError, parse_option

        try:
            overrides["image_folders"] = dict(parse_option(text) for text in args.image_folder)
        except ImageFolderError as exc:
            print(f"convscope: {exc}", file=sys.stderr)
            return 2
        for name, path in overrides["image_folders"].items():
            if not path.is_dir():
                print(f"convscope: --image-folder {name}: {path} is not a folder", file=sys.stderr)
                return 2
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    # this computer's address (or every address): the page opens at localhost
    url_host = "localhost" if is_loopback(settings.host) or settings.host in ("0.0.0.0", "::") else settings.host
    url = f"http://{url_host}:{settings.port}/?model={settings.default_model}"
    failed: list[BaseException] = []

    def build():  # type: ignore[no-untyped-def]  # in a worker thread, while the page is already served
        from server.main import create_app

        return create_app(settings)  # its lifespan checks the device, the models file and the default model

    def ready() -> None:
        print(f"ConvScope is ready: {url}", flush=True)

    def failure(exc: BaseException) -> None:
        from models.models_file import ModelsFileError
        from server.errors import ApiError

        if not isinstance(exc, (ModelsFileError, RuntimeError, ApiError)):  # a bug rather than a setting
            logging.getLogger("convscope").error("ConvScope could not start", exc_info=exc)
        print(f"convscope: {exc.message if isinstance(exc, ApiError) else exc}", file=sys.stderr, flush=True)
        failed.append(exc)
        server.should_exit = True

    app = StartingApp(settings, build, ready, failure)
    # Forwarded headers are the app's to apply, from the proxies the settings name (server.middleware.forwarded); a live
    # frame over the app's own limit is answered with a JSON error, so the socket's own cap is larger.
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info",
                            timeout_graceful_shutdown=settings.shutdown_grace_s,  # open streams never hold a stop
                            proxy_headers=False, ws_max_size=settings.live_socket_max_bytes)
    server = uvicorn.Server(config)
    original_startup = server.startup

    async def startup(sockets=None):  # type: ignore[no-untyped-def]
        await original_startup(sockets)
        if server.started and app.state == "loading":
            print(f"ConvScope is serving the page at {url} and loading PyTorch and the models…", flush=True)

    server.startup = startup  # type: ignore[method-assign]
    server.run()
    return 2 if failed else 0


def _worker(args: argparse.Namespace) -> int:
    from server.services.work.worker import run_worker
    from server.settings import Settings

    overrides = {"device": args.device, "models_file": args.models_file, "redis_url": args.redis_url}
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    if not settings.redis_url:
        print("convscope: a worker takes its jobs from Redis: set CONVSCOPE_REDIS_URL or --redis-url", file=sys.stderr)
        return 2
    if _registry(settings.models_file) is None:
        return 2
    return run_worker(settings, args.queue or None, burst=args.burst)


def _registry(models_file: Path | None):  # type: ignore[no-untyped-def]
    """The built-in models plus the models file's; None (after saying why) when the file is unusable."""
    from models.models_file import ModelsFileError, app_registry

    try:
        return app_registry(models_file)
    except ModelsFileError as exc:
        print(f"convscope: {exc}", file=sys.stderr)
        return None


def _models_file(args: argparse.Namespace) -> Path | None:
    from server.settings import Settings

    return args.models_file or Settings().models_file  # CONVSCOPE_MODELS_FILE when no flag


def _models(args: argparse.Namespace) -> int:
    registry = _registry(_models_file(args))
    if registry is None:
        return 2
    rows = [(e.id, e.family, status.state, e.title, status.detail)
            for e in registry.list() for status in [e.weights.status()]]
    width = max(len(r[0]) for r in rows)
    for model_id, family, state, title, detail in rows:
        print(f"{model_id:<{width}}  {family:<11}  {state:<12}  {title} — {detail}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from models.datasets.image_folder import ImageFolderError, parse_option
    from models.registry import get_entry
    from models.training.config import ConfigError, for_architecture
    from models.training.data import DataUnavailable
    from models.training.plan import Sources
    from models.training.train import train_model

    try:
        entry = get_entry(args.model)
    except KeyError:
        entry = None  # a models-file model (--models-file), resolved with the run
    if entry is not None and entry.family != "bundled":
        hint = f"; use `convscope download {args.model}`" if entry.family == "torchvision" else ""
        print(f"convscope: {args.model} is a {entry.family} model, not one ConvScope trains{hint}", file=sys.stderr)
        return 2
    if entry is None and args.models_file is None:
        print(f"convscope: no model {args.model!r} (see `convscope models`; a model of your own needs "
              "--models-file)", file=sys.stderr)
        return 2
    try:
        folders = dict(parse_option(text) for text in args.image_folder)
    except ImageFolderError as exc:
        print(f"convscope: {exc}", file=sys.stderr)
        return 2
    sources = Sources(image_folders=folders, models_file=args.models_file)
    knobs = {name: getattr(args, name) for name in TRAIN_KNOBS if getattr(args, name) is not None}
    if args.augment is not None:
        knobs["augment"] = {"default": True, "none": False}.get(args.augment, tuple(
            kind.strip() for kind in args.augment.split(",") if kind.strip()))
    try:
        config = for_architecture(args.model, seed=args.seed, **knobs)
        metrics = train_model(args.model, data_dir=args.data, out_dir=args.out, download=args.download, config=config,
                              sources=sources)
    except ConfigError as exc:
        print(f"convscope: {exc.message}", file=sys.stderr)
        return 2
    except DataUnavailable as exc:
        print(f"convscope: {exc}", file=sys.stderr)
        return 2
    print(f"{args.model}: test accuracy {metrics['test_accuracy'] * 100:.2f}% on {metrics.get('test_set')}")
    return 0


# The Train view's knobs, as `convscope train` options (the same names as the API's body)
TRAIN_KNOBS = ("dataset", "epochs", "batch_size", "optimizer", "lr", "schedule", "weight_decay", "dropout",
               "batch_norm", "train_size", "init")


def _download(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from models.registry import HubWeights, WeightsError, get_entry

    try:
        source = get_entry(args.model).weights
    except KeyError:
        print(f"convscope: no model {args.model!r}", file=sys.stderr)
        return 2
    if not isinstance(source, HubWeights):
        print(f"{args.model}'s weights are bundled; nothing to download.")
        return 0
    bar = tqdm(unit="B", unit_scale=True, desc=source.filename)

    def progress(done: int, total: int | None) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        path = source.download(progress)
    except WeightsError as exc:
        bar.close()
        print(f"convscope: {exc}", file=sys.stderr)
        return 1
    bar.close()
    print(f"saved {path}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    import torch

    from server.errors import ApiError
    from server.services.export.explain_image import explain_image
    from server.services.images.decode import decode_image
    from server.services.runtime.model_runtime import ModelRuntime
    from server.settings import Settings, resolve_device

    settings = Settings(**({"device": args.device} if args.device else {}))
    registry = _registry(_models_file(args))
    if registry is None:
        return 2
    try:
        data = Path(args.image).read_bytes()
    except OSError as exc:
        print(f"convscope: cannot read {args.image}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    out = args.out or Path(f"{Path(args.image).stem}-{args.model}-{args.method}")
    try:
        runtime = ModelRuntime(resolve_device(settings.device), 1, registry=registry)
        loaded = runtime.load(args.model, args.weights)
        image = decode_image(data, settings.max_image_pixels)
        report = explain_image(loaded, image, out, method=args.method, layer=args.layer, top=args.top)
    except (ApiError, RuntimeError) as exc:
        message = exc.message if isinstance(exc, ApiError) else str(exc)
        print(f"convscope: {message}", file=sys.stderr)
        return 2
    layer = f" at {report['layer']}" if report["layer"] else ""
    print(f"{report['model']} ({report['weights']} weights), {report['method']}{layer}:")
    for row in report["classes"]:
        print(f"  {row['rank']}. {row['label']:<30} {row['probability'] * 100:6.2f}%  → {out / row['overlay']}")
    print(f"numbers: {out / 'explain.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convscope", description="See inside convolutional networks.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the app; prints the URL once ready")
    serve.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8000)")
    serve.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default=None)
    serve.add_argument("--model", default=None, help="model shown first (default lenet5)")
    serve.add_argument("--models-file", type=Path, default=None, help="a TOML file of your own models")
    serve.add_argument("--proxy-headers", action="store_true",
                       help="believe X-Forwarded-For from a proxy on this machine (127.0.0.1, ::1); off by default")
    serve.add_argument("--forwarded-allow-ips", default=None, metavar="IPS",
                       help="believe X-Forwarded-For from these proxies (comma-separated IPs or networks, * for any;"
                            " CONVSCOPE_FORWARDED_ALLOW_IPS)")
    serve.add_argument("--ws-max-size", type=int, default=None, metavar="BYTES",
                       help="largest WebSocket message read (CONVSCOPE_LIVE_SOCKET_MAX_BYTES, default 64 MiB); "
                            "live frames over the frame limit below it get a JSON error, larger ones close the socket")
    serve.add_argument("--image-folder", action="append", default=[], metavar="NAME=PATH",
                       help="a named folder of JPEG/PNG images (class subfolders or flat) for dataset examples "
                            "and training; repeatable")
    serve.set_defaults(func=_serve)

    models = sub.add_parser("models", help="list models and the state of their weights")
    models.add_argument("--models-file", type=Path, default=None, help="a TOML file of your own models")
    models.set_defaults(func=_models)

    explain = sub.add_parser("explain", help="top classes of an image and one saliency overlay per class")
    explain.add_argument("image", type=Path)
    explain.add_argument("--model", required=True, help="model id (see `convscope models`)")
    explain.add_argument("--method", default="gradcam", help="saliency method (default gradcam)")
    explain.add_argument("--layer", default=None, help="layer for CAM methods (default: the model's own)")
    explain.add_argument("--top", type=int, default=5, help="how many classes (default 5)")
    explain.add_argument("--out", type=Path, default=None, help="folder for the PNGs and explain.json")
    explain.add_argument("--weights", choices=["auto", "trained", "untrained"], default="auto")
    explain.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default=None)
    explain.add_argument("--models-file", type=Path, default=None, help="a TOML file of your own models")
    explain.set_defaults(func=_explain)

    train = sub.add_parser("train", help="train a bundled architecture or a models-file model (the Train view's knobs)")
    train.add_argument("model", help="lenet5, mnist-shallow, mnist-deep, tinyvgg-shapes, or a --models-file model's id "
                                     "(input at most 64×64)")
    train.add_argument("--models-file", type=Path, default=None, help="a TOML file of your own models")
    train.add_argument("--image-folder", action="append", default=[], metavar="NAME=PATH",
                       help="a named folder of class subfolders, trained on with --dataset folder:NAME; repeatable")
    train.add_argument("--data", type=Path, default=None, help="data folder (default: CONVSCOPE_DATA_DIR or ../shared/data)")
    train.add_argument("--out", type=Path, default=None, help="where to write weights and metrics (default models/weights)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--dataset", default=None, metavar="DATASET",
                       help="mnist, fashion-mnist, shapes or folder:NAME (see --image-folder); default: the model's own")
    train.add_argument("--epochs", type=int, default=None)
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--optimizer", choices=["sgd", "momentum", "adam", "adamw"], default=None)
    train.add_argument("--lr", type=float, default=None, help="learning rate (one-cycle: its peak)")
    train.add_argument("--schedule", choices=["constant", "step", "cosine", "onecycle"], default=None)
    train.add_argument("--weight-decay", type=float, default=None)
    train.add_argument("--dropout", type=float, default=None, help="dropout p before the output layer (0: none)")
    train.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=None)
    train.add_argument("--augment", default=None, metavar="KINDS",
                       help="default, none, or a comma list of shift, flip, rotate, scale")
    train.add_argument("--train-size", type=int, default=None, help="train on the first N training images")
    train.add_argument("--init", choices=["random", "current"], default=None,
                       help="random weights (default), or fine-tune from the model's current trained weights")
    train.add_argument("--download", action="store_true", help="download MNIST's training set when online")
    train.set_defaults(func=_train)

    worker = sub.add_parser("worker", help="run background jobs (feature visualisation, dataset examples, sanity "
                                           "checks) from the Redis job queue, on this machine or another")
    worker.add_argument("--redis-url", help="the replicas' CONVSCOPE_REDIS_URL (default: that variable)")
    worker.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"])
    worker.add_argument("--models-file", type=Path)
    worker.add_argument("--queue", action="append", help="queue(s) to take jobs from (default: convscope)")
    worker.add_argument("--burst", action="store_true", help="stop once the queue is empty")
    worker.set_defaults(func=_worker)

    download = sub.add_parser("download", help="download a torchvision model's trained weights into the hub cache")
    download.add_argument("model")
    download.set_defaults(func=_download)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
