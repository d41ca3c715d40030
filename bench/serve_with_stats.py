"""Serves the app as ``convscope serve`` does (its own process, uvicorn on 127.0.0.1), and answers a benchmark
on standard input: a line ``stats`` gets one JSON line of the server's counts back (result caches, shared
answers), a line ``memory`` one JSON line of what every result cache holds and may hold (bytes) and the
loaded models' parameters, ``tensors`` the live tensors and glibc's malloc account, ``trace ...`` tracemalloc
snapshots and their difference; end of input stops the server.

Run by a benchmark: python bench/serve_with_stats.py PORT   (settings from CONVSCOPE_* variables)
"""

from __future__ import annotations

import gc
import json
import sys
import threading
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.main import create_app  # noqa: E402
from server.settings import Settings  # noqa: E402


def counts(app) -> dict:  # noqa: ANN001
    state = app.state
    saliency = state.saliency_maps.cache.stats
    shared = state.shared_answers.stats
    return {"saliency_computations": saliency.computations, "saliency_shared": saliency.shared,
            "saliency_hits": saliency.hits, "answers_copied": shared.copied, "answers_ran_alone": shared.ran_alone}


def memory(app) -> dict:  # noqa: ANN001
    """Every ResultCache the app holds (the loaded models' one apart): bytes held and budget.

    Found by walking what the app refers to, not with ``gc.get_objects()``: the caches are made at start-up,
    and the server freezes its start-up objects out of the collector (``gc.freeze``), which hides them from it."""
    import types

    import torch

    from server.services.runtime.cache import ResultCache

    skip = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType, torch.Tensor, torch.nn.Module)
    seen: set[int] = set()
    stack: list[object] = [app.state]
    found: list[ResultCache] = []
    while stack and len(seen) < 2_000_000:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        if isinstance(obj, ResultCache):
            found.append(obj)
            continue  # its entries are values, not more caches
        stack.extend(gc.get_referents(obj))
    caches: dict[str, list[int]] = {}
    models = 0
    for cache in found:
        if cache.name == "models":
            models += cache.nbytes
            continue
        held = caches.setdefault(cache.name, [0, 0])
        held[0] += cache.nbytes
        held[1] += cache.budget_bytes
    return {"caches": caches, "cache_bytes": sum(h for h, _ in caches.values()),
            "cache_budget_bytes": sum(b for _, b in caches.values()), "model_bytes": models}


def tensors() -> dict:
    """Live torch tensors found by the garbage collector, by distinct storage: count and bytes, and the
    largest kinds by (dtype, shape-rank) so a growing kind stands out between passes."""
    import torch

    seen: dict[int, int] = {}
    kinds: dict[str, int] = {}
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and not obj.is_meta:
            try:
                storage = obj.untyped_storage()
            except (RuntimeError, NotImplementedError):
                continue
            ptr = storage.data_ptr()
            if ptr and ptr not in seen:
                seen[ptr] = storage.nbytes()
                kind = f"{obj.dtype}/{obj.dim()}d{'/grad' if obj.requires_grad else ''}"
                kinds[kind] = kinds.get(kind, 0) + storage.nbytes()
    top = dict(sorted(kinds.items(), key=lambda kv: -kv[1])[:6])
    return {"count": len(seen), "bytes": sum(seen.values()), "kinds": top}


def malloc_info() -> dict:
    """glibc's own account (mallinfo2): bytes in use by malloc, free inside its heaps, and in mmap'd chunks."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")]

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    return {"heap_bytes": info.arena, "in_use_bytes": info.uordblks, "free_in_heap_bytes": info.fordblks,
            "mmapped_bytes": info.hblkhd}


def _storages(value: object, into: set[int], depth: int = 0) -> None:
    """The tensor storages a cached value keeps alive (arrays through their bases, containers, objects)."""
    import numpy as np
    import torch

    if depth > 4:
        return
    while isinstance(value, np.ndarray) and value.base is not None:
        value = value.base
    if isinstance(value, torch.Tensor):
        into.add(value.untyped_storage().data_ptr())
    elif isinstance(value, dict):
        for item in value.values():
            _storages(item, into, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _storages(item, into, depth + 1)
    elif hasattr(value, "__dict__"):
        for item in vars(value).values():
            _storages(item, into, depth + 1)


def stray() -> dict:
    """Live tensors that no result cache and no model holds, by shape, with what refers to a few of them
    (through untracked containers and arrays too: numpy arrays are invisible to gc.get_referrers)."""
    import numpy as np
    import torch

    from server.services.runtime.cache import ResultCache

    gc.collect()
    owned: set[int] = set()
    for obj in gc.get_objects():
        if isinstance(obj, ResultCache):
            for value in obj.values():
                _storages(value, owned)
        elif isinstance(obj, torch.nn.Module):
            for t in (*obj.parameters(recurse=False), *obj.buffers(recurse=False)):
                owned.add(t.untyped_storage().data_ptr())
    strays: dict[int, torch.Tensor] = {}
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and not obj.is_meta:
            ptr = obj.untyped_storage().data_ptr()
            if ptr and ptr not in owned:
                strays.setdefault(ptr, obj)
    shapes: dict[str, list[int]] = {}
    for t in strays.values():
        entry = shapes.setdefault(f"{tuple(t.shape)}{' grad' if t.grad_fn is not None else ''}", [0, 0])
        entry[0] += 1
        entry[1] += t.untyped_storage().nbytes()
    ids = {id(t) for t in strays.values()}
    holders: dict[str, int] = {}

    def holds(item: object) -> bool:
        while isinstance(item, np.ndarray) and item.base is not None:
            item = item.base
        return id(item) in ids

    for obj in gc.get_objects():
        if obj is strays:
            continue
        for item in gc.get_referents(obj):
            inner = item.values() if isinstance(item, dict) and not gc.is_tracked(item) else \
                item if isinstance(item, (list, tuple)) and not gc.is_tracked(item) else ()
            if holds(item) or any(holds(x) for x in inner):
                name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
                holders[name] = holders.get(name, 0) + 1
    top = sorted(shapes.items(), key=lambda kv: -kv[1][1])[:8]
    strays.clear()
    return {"count": sum(c for c, _ in shapes.values()), "bytes": sum(b for _, b in shapes.values()),
            "shapes": {k: f"{c} × = {b / 2**20:.1f} MB" for k, (c, b) in top}, "holders": holders}


def garbage() -> dict:
    """What the cyclic garbage collector frees now: objects by type, the code of the frames among them, and
    the tensor bytes those cycles kept alive (freed only when a full collection runs)."""
    import torch

    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = list(gc.garbage)
        gc.garbage.clear()
    finally:
        gc.set_debug(0)

    ptrs: set[int] = set()
    frames: dict[str, int] = {}
    kinds: dict[str, int] = {}
    for obj in found:
        kinds[type(obj).__name__] = kinds.get(type(obj).__name__, 0) + 1
        if type(obj).__name__ == "frame":
            code = obj.f_code  # type: ignore[attr-defined]
            where = f"{'/'.join(code.co_filename.rsplit('/', 2)[-2:])}:{code.co_name}"
            frames[where] = frames.get(where, 0) + 1
            _storages(dict(obj.f_locals), ptrs)  # type: ignore[attr-defined]
        elif not isinstance(obj, type):
            _storages(obj, ptrs)
    sizes = {}
    for obj in found:
        if isinstance(obj, torch.Tensor):
            ptrs.add(obj.untyped_storage().data_ptr())
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and not obj.is_meta and obj.untyped_storage().data_ptr() in ptrs:
            sizes[obj.untyped_storage().data_ptr()] = obj.untyped_storage().nbytes()
    for obj in found:
        if isinstance(obj, torch.Tensor):
            sizes[obj.untyped_storage().data_ptr()] = obj.untyped_storage().nbytes()
    found.clear()
    return {"objects": sum(kinds.values()), "tensor_bytes": sum(sizes.values()),
            "kinds": dict(sorted(kinds.items(), key=lambda kv: -kv[1])[:10]),
            "frames": dict(sorted(frames.items(), key=lambda kv: -kv[1])[:12])}


SNAPSHOTS: dict[str, object] = {}


def trace(command: str) -> dict:
    """``trace NAME`` takes a tracemalloc snapshot (when tracing: PYTHONTRACEMALLOC=N in the environment);
    ``trace A B`` answers the 12 source lines whose Python allocations grew most from A to B."""
    import tracemalloc

    names = command.split()[1:]
    if not tracemalloc.is_tracing():
        return {"error": "tracemalloc is off (set PYTHONTRACEMALLOC)"}
    if len(names) == 1:
        gc.collect()
        SNAPSHOTS[names[0]] = tracemalloc.take_snapshot()
        return {"taken": names[0], "traced_bytes": tracemalloc.get_traced_memory()[0]}
    diff = SNAPSHOTS[names[1]].compare_to(SNAPSHOTS[names[0]], "lineno")  # type: ignore[attr-defined]
    return {"growth": [f"{d.size_diff / 2**20:+.2f} MB {d.count_diff:+d} {d.traceback}" for d in diff[:12]]}


def main() -> None:
    settings = Settings(host="127.0.0.1", port=int(sys.argv[1]))
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                                           timeout_graceful_shutdown=settings.shutdown_grace_s))

    def control() -> None:
        for line in sys.stdin:
            if line.strip() == "stats":
                print(json.dumps(counts(app)), flush=True)
            elif line.strip() == "memory":
                print(json.dumps(memory(app)), flush=True)
            elif line.strip() == "tensors":
                print(json.dumps({**tensors(), "malloc": malloc_info()}), flush=True)
            elif line.strip() == "garbage":
                print(json.dumps(garbage()), flush=True)
            elif line.strip() == "stray":
                print(json.dumps(stray()), flush=True)
            elif line.startswith("trace"):
                print(json.dumps(trace(line)), flush=True)
        server.should_exit = True

    threading.Thread(target=control, daemon=True).start()
    server.run()


if __name__ == "__main__":
    main()
