"""What one client may spend in a time window: a keyed sliding window, and the upload quota built on it."""

from server.services.quotas.uploads import UploadQuota
from server.services.quotas.window import KeyedWindow, WindowLimit

__all__ = ["KeyedWindow", "UploadQuota", "WindowLimit"]
