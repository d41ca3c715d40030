from __future__ import annotations

from fastapi import APIRouter

from server import __version__
from server.deps import RuntimeDep
from server.openapi import Health, json_answer
from server.settings import device_label

router = APIRouter(prefix="/api", tags=["health"])


@router.get("/health", summary="Is the server up, on which device, which version",
            responses=json_answer(Health, {"status": "ok", "device": "cpu", "version": "0.1.0"}))
async def health(runtime: RuntimeDep) -> dict[str, str]:
    """No model work and no thread: answers at once, however busy the model pools are."""
    return {"status": "ok", "device": device_label(runtime.device), "version": __version__}
