"""The image store's eviction rules, one implementation for every backend.

Over budget, the least recently used image *of the client that holds the most bytes* goes (an image
belongs to the clients that uploaded it), so one student flooding the store evicts their own uploads, not
the class's. Spared images (pinned by a live classroom session, or the one just stored) never go. An image
several clients uploaded is first only taken off the heavy client's account; it goes once it has one owner
left and that owner is the heaviest again.
"""

from __future__ import annotations

from collections.abc import Iterable, Set

from server.services.images.backends import LedgerEntry


def plan_eviction(entries: Iterable[LedgerEntry], budget_bytes: int,
                  spared: Set[str]) -> tuple[list[tuple[str, str | None]], int]:
    """The steps that bring the store under ``budget_bytes``, in order: ``(image_id, owner)`` takes the image
    off ``owner``'s account, ``(image_id, None)`` deletes it; and the bytes left after them (more than the
    budget only when what is left is spared)."""
    ordered = sorted(entries, key=lambda e: e.last_used)
    total = sum(e.size for e in ordered)
    if total <= budget_bytes:
        return [], total
    owned: dict[str, list[LedgerEntry]] = {}  # client → its images, least recently used first
    for entry in ordered:
        for owner in entry.owners:
            owned.setdefault(owner, []).append(entry)
    owners = {e.image_id: set(e.owners) for e in ordered}
    weights = {owner: sum(e.size for e in mine if e.image_id not in spared) for owner, mine in owned.items()}
    cursor = dict.fromkeys(owned, 0)
    steps: list[tuple[str, str | None]] = []
    while total > budget_bytes:
        owner = max((o for o, w in weights.items() if w > 0), key=weights.__getitem__, default=None)
        if owner is None:
            break  # only spared images are left: the store may exceed its budget
        mine = owned[owner]
        while mine[cursor[owner]].image_id in spared or owner not in owners[mine[cursor[owner]].image_id]:
            cursor[owner] += 1
        victim = mine[cursor[owner]]
        cursor[owner] += 1
        weights[owner] -= victim.size
        if len(owners[victim.image_id]) > 1:  # someone else's too: no longer counted as this client's
            owners[victim.image_id].discard(owner)
            steps.append((victim.image_id, owner))
            continue
        owners[victim.image_id].clear()
        steps.append((victim.image_id, None))
        total -= victim.size
    return steps, total


def owned_bytes(entries: Iterable[LedgerEntry], owner: str) -> int:
    """Bytes of the images ``owner`` uploaded (an image several clients uploaded counts for each)."""
    return sum(e.size for e in entries if owner in e.owners)
