"""Images: the content-addressed store, isolated decoding, bounded uploads and the sample gallery."""

from server.services.images.decode import IsolatedDecoder, decode_limits
from server.services.images.store import ImageStore
from server.services.images.upload import UploadGate

__all__ = ["ImageStore", "IsolatedDecoder", "UploadGate", "decode_limits"]
