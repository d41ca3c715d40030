"""The named image folders this server was given (``--image-folder NAME=PATH``): what the page offers as
datasets for "what does this channel look for?" (and training)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from server.deps import ImageFoldersDep
from server.openapi import json_example

router = APIRouter(prefix="/api", tags=["image folders"])
EXAMPLE = {"folders": [{"name": "pets", "dataset": "folder:pets", "images": 300, "classes": ["cat", "dog"],
                        "layout": "classes", "skipped": 0, "not_listed": 0}]}


@router.get("/image-folders", summary="The named image folders: images, classes, layout",
            responses=json_example(EXAMPLE))
async def list_folders(folders: ImageFoldersDep) -> dict[str, Any]:
    """Each folder as listed (the first request lists it: header checks of its files, in a worker thread);
    a folder that cannot be used says why instead of its counts."""

    def describe() -> list[dict[str, Any]]:
        out = []
        for name in folders.names():
            try:
                out.append({**folders.get(name).describe(), "dataset": f"folder:{name}"})
            except Exception as exc:  # noqa: BLE001 (an ApiError with the reason: shown, never a 500)
                out.append({"name": name, "dataset": f"folder:{name}", "error": getattr(exc, "message", str(exc))})
        return out

    return {"folders": await run_in_threadpool(describe)}
