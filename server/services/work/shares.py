"""Places one client may hold in a shared pool (the heavy work pool, the background-job queue).

A pool gives each client ``per_client`` places (running or waiting). A client is a member of a group
(:class:`~server.services.work.clients.ClientId`): the members of one group together hold at most
``group_scale`` × ``per_client`` places, so ids a client makes up (a header hint) share their address's places
instead of adding new ones, and the students of one class session share the session's bound.
"""

from __future__ import annotations

from server.services.work.clients import ClientId


class Shares:
    """Counts of places held per member and per group; not thread-safe (the pool's lock guards it)."""

    def __init__(self, per_client: int | None) -> None:
        self.per_client = per_client
        self._members: dict[str, int] = {}
        self._groups: dict[str, int] = {}

    def refusal(self, client: ClientId) -> str | None:
        """Why ``client`` may not take one more place (a phrase for the 429's message), or None."""
        if self.per_client is None:
            return None
        held = self._members.get(client.member, 0)
        if held >= self.per_client:
            return f"{held} computations"
        group_cap = self.per_client * max(1, client.group_scale)
        together = self._groups.get(client.group, 0)
        if together >= group_cap:
            who = "your class session" if client.group.startswith("session:") else "your network address"
            return f"{together} computations from {who} (its share is {group_cap})"
        return None

    def group_full(self, client: ClientId) -> bool:
        """Whether ``client`` is refused only because its group holds its whole share (the member itself
        holds less than one share)."""
        return (self.per_client is not None and self._members.get(client.member, 0) < self.per_client
                and self._groups.get(client.group, 0) >= self.per_client * max(1, client.group_scale))

    def take(self, client: ClientId) -> None:
        self._members[client.member] = self._members.get(client.member, 0) + 1
        self._groups[client.group] = self._groups.get(client.group, 0) + 1

    def release(self, client: ClientId) -> None:
        for table, key in ((self._members, client.member), (self._groups, client.group)):
            left = table.get(key, 0) - 1
            if left > 0:
                table[key] = left
            else:
                table.pop(key, None)

    def held(self, member: str) -> int:
        return self._members.get(member, 0)

    def held_by_group(self, group: str) -> int:
        return self._groups.get(group, 0)

    def __len__(self) -> int:
        """Members holding places (bounded by the places themselves: nothing stays after release)."""
        return len(self._members)
