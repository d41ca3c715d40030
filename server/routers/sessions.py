"""Classroom sessions over HTTP: create, follow (Server-Sent Events), set state, the class wall, the QR code."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from server.deps import ClassroomDep, ClientAddressDep, LastEventIdDep, SettingsDep
from server.errors import ApiError
from server.responses import EventStreamResponse, png_response
from server.services.classroom.codes import normalize_code
from server.services.classroom.join_url import join_base
from server.services.classroom.qr import qr_png
from server.services.work.clients import STUDENT, client_address

router = APIRouter(prefix="/api", tags=["sessions"])
join_router = APIRouter(include_in_schema=False)

Authorization = Annotated[str | None, Header()]


# The page's view state as the schema can say it (server/services/classroom/state_rules.py checks it all, and
# the size as JSON against CONVSCOPE_MAX_SESSION_STATE_BYTES, which JSON Schema cannot count).
STATE_SCHEMA = {"propertyNames": {"pattern": "^[A-Za-z][A-Za-z0-9_.-]{0,63}$"}, "maxProperties": 64,
                "additionalProperties": {"type": "string", "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"},
                "description": "the page's URL query keys and their string values, at most "
                               "CONVSCOPE_MAX_SESSION_STATE_BYTES (4096) as JSON"}


class NewSession(BaseModel):
    state: dict[str, Any] | None = Field(None, json_schema_extra=STATE_SCHEMA)


class StateBody(BaseModel):
    state: dict[str, Any] = Field(json_schema_extra=STATE_SCHEMA)


class SubmissionBody(BaseModel):
    image_id: str
    name: str | None = None


@router.post("/sessions", status_code=201)
async def create_session(request: Request, classroom: ClassroomDep, settings: SettingsDep,
                         body: NewSession | None = None) -> dict[str, Any]:
    base = join_base(request.url.scheme, request.headers.get("host"), settings.host, settings.public_url)
    creator = await client_address(request)
    created = await classroom.create(base.url, body.state if body else None, creator)
    return {**created, **({"warning": base.warning} if base.warning else {})}


@router.get("/sessions/{code}")
async def session_info(code: str, classroom: ClassroomDep, client: ClientAddressDep,
                       authorization: Authorization = None) -> dict[str, Any]:
    return await classroom.info(code, authorization, client)


@router.delete("/sessions/{code}")
async def close_session(code: str, classroom: ClassroomDep, client: ClientAddressDep,
                        authorization: Authorization = None) -> dict[str, Any]:
    await classroom.close(code, authorization, client)
    return {"code": normalize_code(code), "closed": True}


@router.put("/sessions/{code}/state")
async def set_state(code: str, body: StateBody, classroom: ClassroomDep, client: ClientAddressDep,
                    authorization: Authorization = None) -> dict[str, Any]:
    return await classroom.set_state(code, authorization, body.state, client)


@router.get("/sessions/{code}/events", response_class=EventStreamResponse)
async def follow(code: str, classroom: ClassroomDep, client: ClientAddressDep,
                 last_event_id: LastEventIdDep) -> EventStreamResponse:
    stream = await classroom.follow(code, last_event_id, client)
    return EventStreamResponse(stream, headers={"Cache-Control": "no-cache, no-transform",
                                                "X-Accel-Buffering": "no"})


@router.post("/sessions/{code}/submissions", status_code=201)
async def submit(code: str, body: SubmissionBody, classroom: ClassroomDep, client: ClientAddressDep,
                 x_convscope_student: Annotated[str | None, Header()] = None) -> dict[str, Any]:
    # Per-student caps count by the page's own random id when it sends one (students behind one NAT stay
    # apart), else by address. A student who forges ids still meets the per-session cap.
    student = f"{client}|{x_convscope_student}" if x_convscope_student and STUDENT.match(x_convscope_student) \
        else client
    return await classroom.submit(code, body.image_id, body.name, student, client)


@router.get("/sessions/{code}/submissions")
async def wall(code: str, classroom: ClassroomDep, client: ClientAddressDep,
               authorization: Authorization = None) -> dict[str, Any]:
    return await classroom.wall(code, authorization, client)


@router.delete("/sessions/{code}/submissions")
async def clear_wall(code: str, classroom: ClassroomDep, client: ClientAddressDep,
                     authorization: Authorization = None) -> dict[str, Any]:
    await classroom.clear(code, authorization, client)
    return {"code": normalize_code(code), "submissions": 0}


@router.get("/sessions/{code}/qr.png")
async def join_qr(code: str, classroom: ClassroomDep, client: ClientAddressDep) -> Response:
    info = await classroom.info(code, client=client)
    return png_response(qr_png(info["join_url"]), {"Cache-Control": "private, max-age=3600"})


@join_router.get("/join/{code}")
def join(code: str) -> RedirectResponse:
    canonical = normalize_code(code)
    if canonical is None:
        raise ApiError(404, "unknown_session", "A session code is six letters and digits, like K7XQ2M.")
    return RedirectResponse(f"/?session={canonical}", status_code=303)
