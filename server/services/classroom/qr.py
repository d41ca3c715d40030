"""The join URL as a QR code PNG, drawn by segno (pure Python, no network)."""

from __future__ import annotations

import io

import segno


def qr_png(text: str, scale: int = 8) -> bytes:
    """Black on white with the standard four-module quiet zone; error correction M survives a projector."""
    buf = io.BytesIO()
    segno.make(text, error="m", micro=False).save(buf, kind="png", scale=scale, border=4)
    return buf.getvalue()
