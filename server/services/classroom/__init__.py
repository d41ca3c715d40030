"""Classroom sessions: join codes, the teacher's state followed live over SSE, the class's image wall."""

from server.services.classroom.backend import SessionBackend
from server.services.classroom.memory import InProcessBackend
from server.services.classroom.service import Classroom, SessionLimits

__all__ = ["Classroom", "InProcessBackend", "SessionBackend", "SessionLimits", "make_backend"]


def make_backend(redis_url: str | None) -> SessionBackend:
    """Redis when a URL is configured (sessions shared by replicas), else this process's memory."""
    if redis_url:
        from server.services.classroom.redis_backend import RedisBackend

        return RedisBackend(redis_url)
    return InProcessBackend()
