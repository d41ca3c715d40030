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
