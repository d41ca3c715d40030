"""A client as admission control counts it (decided by :mod:`server.services.fairness.identity`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClientId:
    group: str  # an address, or "session:CODE"
    member: str  # the group itself, or a hint / student inside it
    group_scale: int = 1  # the group may hold this many per-client shares together

    @classmethod
    def of(cls, name: str) -> ClientId:
        """A plain client named ``name`` (tests, the CLI, work started by the server itself)."""
        return cls(name, name)

    def __str__(self) -> str:
        return self.member


LOCAL = ClientId.of("local")
