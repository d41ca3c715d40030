from __future__ import annotations

from fastapi import APIRouter

from server import __version__
from server.deps import RuntimeDep
from server.settings import device_label

router = APIRouter(prefix="/api", tags=["health"])


@router.get("/health")
async def health(runtime: RuntimeDep) -> dict[str, str]:
    """No model work and no thread: answers at once, however busy the model pools are."""
    return {"status": "ok", "device": device_label(runtime.device), "version": __version__}
