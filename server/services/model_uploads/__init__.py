"""Models dropped into the page (POST /api/models): converted in a child process, scoped, dropped when idle."""

from server.services.model_uploads.uploads import ModelUploads, UploadLimits, uploads_enabled

__all__ = ["ModelUploads", "UploadLimits", "uploads_enabled"]
