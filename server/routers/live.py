"""Live mode over a WebSocket: ``WS /api/models/{model}/live?layer=&method=&saliency_layer=&weights=``.

Protocol (all server messages are JSON text; the client sends binary frames):

1. On connect the server answers ``{"ready": {model, weights_used, input, layer, layer_shape, method,
   saliency_layer, top_k, limits: {max_frame_bytes, max_frame_pixels}}}``. A bad query (unknown model or
   layer, a method live mode does not offer) gets ``{"error": {code, message, status}}`` and the socket
   is closed with code 1008; too many live clients: the same with code 1013 (try again later). A page of
   another origin (not this server's, nor a configured CORS origin) is refused at the handshake: HTTP 403
   with the API's JSON error ``foreign_origin`` (``security.OriginCheckMiddleware``, as for uploads).
2. The client sends frames: binary messages holding JPEG or PNG bytes (any size up to the limits; the
   model's own preprocessing crops and resizes, exactly as for an upload). A text message
   ``{"patch": {"y", "x", "size", "fill"}}`` covers part of every following frame as the occlusion probe
   does (``POST .../occlusion-probe``: model-input pixels, grey / blur / noise); ``{"patch": null}`` ends it.
3. For each frame it computes, the server sends one message::

     {"frame": n, "dropped": d, "weights_used",
      "predictions": [{"index", "label", "probability"}, ...],      # top 5, as GET .../predictions
      "layer": {"name", "shape", "atlas": "data:image/png;base64,…",  # palette PNG, channel c at
                "channels", "tile", "grid", "image", "colormap",    #   column c % columns, row c // columns
                "stops", "data_range", "tiles": {"low", "high"},    # the legend, as atlas.json
                "downsampled": f, "channel_shape": [H, W]},         # tiles averaged f×f when large
      "input": "data:image/png;base64,…",                           # what the model sees (inputs ≤ 64×64)
      "saliency": {"method", "layer", "target", "label", "probability", "overlay": "data:image/…",
                   "opacity", "colormap", "stops", "raw_range"},    # only with ?method=
      "patch": {"y", "x", "height", "width", "fill"},               # only with a patch, clipped as the
                                                                    #   probe states it; "input" then sent
      "timing": {"queue_ms", "decode_ms", "model_ms", "encode_ms", "server_ms"}}

   ``n`` numbers the frames received on this socket (from 1); ``d`` how many frames this one replaced
   while it waited (never answered). Latest frame wins: one frame in the model, the next one decoded
   meanwhile, and at most one more waiting undecoded — a newer frame replaces that one.
4. A bad frame (not an image: 415, damaged: 422, empty: 400, too many bytes or pixels: 413) or a busy
   server (503, with ``retry_after_s``) gets ``{"error": {code, message, status}, "frame": n}``; the
   socket stays open. (A message over the WebSocket cap itself, ``live_socket_max_bytes``, 64 MiB, which
   ``convscope serve`` gives uvicorn as ``ws_max_size``, closes the socket with 1009 unread.) A text
   message other than a patch gets a 400 error message (one over 1,024 characters a 413, unread), a
   patch out of range or larger than the model input a 422 naming the field (``patch.size``); the
   socket stays open and the patch in force stays. After ``live_idle_timeout_s`` without a
   message the server says so and closes the socket.

Nothing a client sends is stored; the page's "Capture" uploads a frame through ``POST /api/images``.
"""

from __future__ import annotations

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketState

from server.deps import ClientAddressDep, LiveHubDep
from server.errors import ApiError

router = APIRouter(prefix="/api", tags=["live"])

CLOSE_POLICY = 1008  # a query the server refuses
CLOSE_TRY_AGAIN = 1013  # too busy for another live client


@router.websocket("/models/{model}/live")
async def live(websocket: WebSocket, model: str, hub: LiveHubDep, client: ClientAddressDep, layer: str | None = None,
               method: str | None = None, saliency_layer: str | None = None, weights: str = "auto") -> None:
    await websocket.accept()  # (a page of another origin was refused before: security.OriginCheckMiddleware)

    async def receive() -> bytes | str | None:
        try:
            message = await websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            return None
        if message["type"] == "websocket.disconnect":
            return None
        if message.get("bytes") is not None:
            return message["bytes"]
        return message.get("text") or ""

    try:
        config = await run_in_threadpool(hub.configure, model, weights, layer, method or None, saliency_layer)
        with hub.session(config, client) as session:
            await session.run(receive, websocket.send_json)
    except ApiError as err:
        error = {"code": err.code, "message": err.message, "status": err.status}
        if "Retry-After" in err.headers:
            error["retry_after_s"] = float(err.headers["Retry-After"])
        await websocket.send_json({"error": error})
        await websocket.close(code=CLOSE_TRY_AGAIN if err.status in (429, 503) else CLOSE_POLICY, reason=err.code)
        return
    except WebSocketDisconnect:
        return
    if websocket.client_state == WebSocketState.CONNECTED and websocket.application_state == WebSocketState.CONNECTED:
        try:
            await websocket.close()
        except RuntimeError:  # the client went away meanwhile
            pass
