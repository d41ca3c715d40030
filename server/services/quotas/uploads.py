"""The per-client upload quota: how many uploads, and how many bytes, one address may add to the shared
image store in a time window (``Settings.upload_quota_*``). Beyond it: 429 + Retry-After, before the body
is read when the count alone is spent, else before the picture is decoded.

Bytes are the larger of what was sent and what the store newly keeps: a small JPEG of noise becomes a large
PNG working copy, and it is the store's room that the class shares.
"""

from __future__ import annotations

import math

from server.errors import ApiError
from server.services.quotas.window import KeyedWindow, WindowLimit


class UploadQuota:
    def __init__(self, limit: WindowLimit, max_clients: int = 10_000) -> None:
        self.window = KeyedWindow(limit, max_keys=max_clients)

    def check(self, client: str, size: int = 0) -> None:
        """Raise 429 unless one more upload of ``size`` bytes fits in ``client``'s quota now."""
        wait = self.window.wait_for(client, size)
        if wait <= 0:
            return
        limit = self.window.limit
        uploads, spent = self.window.totals(client)
        window = f"{limit.window_s / 60:g} minutes" if limit.window_s >= 60 else f"{limit.window_s:g} s"
        if math.isinf(wait):
            raise ApiError(413, "file_too_large", f"The upload is larger than the {limit.amount / 2**20:.0f} MB "
                           f"one client may upload in {window}.")
        what = (f"{uploads} uploads" if limit.count and uploads >= limit.count
                else f"{spent / 2**20:.0f} MB of images")
        raise ApiError(429, "upload_quota", f"This address has sent {what} in the last {window}, its share of "
                       f"the server's image store; try again in {math.ceil(wait)} s.",
                       {"Retry-After": str(max(1, math.ceil(wait)))})

    def charge(self, client: str, size: int) -> None:
        """Count one upload of ``size`` bytes (after :meth:`check` let it in)."""
        self.window.add(client, size)

    def charge_more(self, client: str, extra: int) -> None:
        """Add bytes to the client's latest upload (the stored copy turned out larger than the upload)."""
        if extra > 0:
            self.window.add(client, extra, count=0)
