"""The server's layout stays walkable (issue 19): main.py wires packages, not every module, and no package
reaches into another package's private (underscore) modules or names."""

from __future__ import annotations

import ast
from pathlib import Path

SERVER = Path(__file__).resolve().parent.parent / "server"


def _internal_imports(path: Path) -> list[ast.ImportFrom | ast.Import]:
    tree = ast.parse(path.read_text())
    found: list[ast.ImportFrom | ast.Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("server", "models"):
            found.append(node)
        elif isinstance(node, ast.Import) and any(a.name.split(".")[0] in ("server", "models") for a in node.names):
            found.append(node)
    return found


def _package(path: Path) -> str:
    """The package a server file belongs to: ``server.services.runtime`` for services/runtime/cache.py."""
    return ".".join(("server", *path.relative_to(SERVER).parent.parts))


def test_main_imports_packages_not_every_module() -> None:
    modules = {node.module for node in _internal_imports(SERVER / "main.py") if isinstance(node, ast.ImportFrom)}
    assert len(modules) <= 12, sorted(modules)


def test_no_package_imports_a_siblings_private_names() -> None:
    offences = []
    for path in SERVER.rglob("*.py"):
        own = _package(path)
        for node in _internal_imports(path):
            if not isinstance(node, ast.ImportFrom) or node.module is None:
                continue
            target = node.module
            private_module = any(part.startswith("_") and part != "__init__" for part in target.split("."))
            private_names = [a.name for a in node.names if a.name.startswith("_") and not a.name.endswith("__")]
            same_package = target == own or target.rsplit(".", 1)[0] == own
            if (private_module or private_names) and not same_package:
                offences.append(f"{path.relative_to(SERVER)}: from {target} import {private_names or '...'}")
    assert offences == []


def _calls(path: Path, attribute: str) -> list[int]:
    """Lines of ``<anything>.<attribute>(...)`` and ``<attribute>(...)`` calls in a file."""
    tree = ast.parse(path.read_text())
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call) and (
        (isinstance(node.func, ast.Attribute) and node.func.attr == attribute)
        or (isinstance(node.func, ast.Name) and node.func.id == attribute))]


# Where a layer name may still be turned into a module (issue 19: "resolve each parameter once"). HTTP
# requests resolve ``{layer}`` in server/deps.py (LayerDep) and ``?layer=`` / ``cam_layer`` / an ablation's
# layer through ``saliency.layer_choice.saliency_layer`` (the model's default when none is named), both by
# LoadedModel.named_layer; the other entries are edges that are not HTTP query parameters: the live
# WebSocket's feature-map layer (once per connection) and the kept-graph forward of the Grad-CAM layer.
LAYER_LOOKUPS = {
    "services/runtime/model_runtime.py": 1,  # named_layer: the one resolver
    "services/runtime/hooks.py": 1,
    "services/live/frame.py": 1,
}


def test_layer_names_are_resolved_once_at_the_edge() -> None:
    found = {str(p.relative_to(SERVER)): len(_calls(p, "layer")) for p in SERVER.rglob("*.py")}
    found = {path: count for path, count in found.items() if count}
    assert found == LAYER_LOOKUPS, "resolve a layer with server.deps.LayerDep (or QueryLayerDep) and hand the " \
                                   "ModelLayer to the service instead of calling loaded.layer() again"
    named = {str(p.relative_to(SERVER)): len(_calls(p, "named_layer")) for p in SERVER.rglob("*.py")}
    assert {path: count for path, count in named.items() if count} == {
        "deps.py": 1, "services/saliency/layer_choice.py": 1,  # the path's layer; a query's layer or the default
        "services/channels/feature_vis.py": 1}  # a queued job's layer, where a worker takes the job (issue 26)


def test_method_and_target_are_checked_only_in_deps() -> None:
    """The saliency method object is built by SaliencyMethodDep and the target range-checked by TargetDep;
    services and routers receive them (the live WebSocket config and the CLI build their own once)."""
    builders = {str(p.relative_to(SERVER)): len(_calls(p, "get_method")) for p in SERVER.rglob("*.py")}
    allowed = {"deps.py", "services/live/frame.py", "services/export/explain_image.py",
               "services/saliency/methods.py", "services/saliency/topk.py",
               "services/trust/sanity.py"}  # a queued sanity check's methods, where a worker takes the job
    assert {path for path, count in builders.items() if count} <= allowed
    checks = [str(p.relative_to(SERVER)) for p in SERVER.rglob("*.py") if "invalid_target" in p.read_text()]
    # LoadedModel.class_index is the one check (deps call it per request), and the logits' own bound
    assert sorted(checks) == ["services/runtime/model_runtime.py", "services/saliency/base.py"]


def test_handlers_do_not_echo_a_raw_model_beside_the_loaded_one() -> None:
    """A handler with a LoadedModelDep answers ``loaded.entry.id``; a raw ``model: str`` beside it is one
    more copy of the same parameter."""
    offences = []
    for path in (SERVER / "routers").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = {a.arg: ast.unparse(a.annotation) if a.annotation else "" for a in node.args.args}
                if "LoadedModelDep" in names.values() and names.get("model") == "str":
                    offences.append(f"{path.name}:{node.name}")
    assert offences == []


def _module_level_calls(path: Path, name: str) -> list[int]:
    tree = ast.parse(path.read_text())
    found = []
    for node in tree.body:
        value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == name:
            found.append(node.lineno)
    return found


def test_no_module_global_caches() -> None:
    """Every ResultCache belongs to an object the wiring makes, with its budget from Settings."""
    offences = [f"{p.relative_to(SERVER)}:{line}" for p in SERVER.rglob("*.py") for line in _module_level_calls(p, "ResultCache")]
    assert offences == []


def test_one_helper_per_small_job() -> None:
    """One hook capture type and early-stop exception, one loopback check, one image-id pattern, one Admit."""
    sources = {str(p.relative_to(SERVER)): p.read_text() for p in SERVER.rglob("*.py")}

    def defining(pattern: str) -> list[str]:
        return sorted(path for path, text in sources.items() if pattern in text)

    assert defining("register_forward_hook(") == ["services/runtime/hooks.py"]
    exceptions = sorted(path for path, text in sources.items()
                        for node in ast.walk(ast.parse(text)) if isinstance(node, ast.ClassDef)
                        and any(ast.unparse(b) == "Exception" for b in node.bases) and "hook" in ast.unparse(node).lower())
    assert exceptions == ["services/runtime/hooks.py"]  # StopForward
    assert defining("def is_loopback") == ["hosts.py"] and defining(".is_loopback") == ["hosts.py"]
    assert defining("{64}") == ["services/images/backends.py"]  # with the stores that check it (issue 26)
    assert defining("Admit = ") == ["services/work/scheduler.py"]
    assert defining("signal.signal(") == ["services/work/stop_signals.py"]


def test_one_test_harness() -> None:
    """free_port, wait_until and SHARED_DATA are defined once (tests/harness.py), and no test file is imported
    as a library by another (shared helpers live in the harness or a *_support module)."""
    root = SERVER.parent
    files = [p for folder in ("tests", "bench") for p in (root / folder).rglob("*.py")]
    texts = {str(p.relative_to(root)): p.read_text() for p in files if p.name != "test_layout.py"}

    def defining(*needles: str) -> list[str]:
        return sorted(path for path, text in texts.items() if any(n in text for n in needles))

    assert defining("def free_port", "def _free_port") == ["tests/harness.py"]
    assert defining("SHARED_DATA = ") == ["tests/harness.py"]
    assert defining("def wait_until") == ["tests/harness.py"]
    assert [path for path, text in texts.items() if "from tests.test_" in text or "from tests.api.test_" in text
            or "import tests.test_" in text] == []
