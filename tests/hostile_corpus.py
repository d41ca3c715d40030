"""A generated corpus of hostile and odd uploads, each with the answer the API must give.

Everything is made by code here (no committed binaries): broken files, non-images in disguise,
decompression bombs, odd pixel modes, animation, EXIF rotation, odd names and content types. Cases that
must be accepted carry a ``check`` on the stored, upright RGB picture.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

PictureCheck = Callable[[Image.Image], None]


@dataclass(frozen=True)
class HostileUpload:
    name: str
    data: bytes
    status: int
    code: str | None  # the error code; None when the upload must be accepted (201)
    filename: str = "upload.jpg"
    content_type: str | None = "application/octet-stream"  # the multipart part's declared type
    size: tuple[int, int] | None = None  # (width, height) the API must report on acceptance
    check: PictureCheck | None = None  # looks at the stored picture (GET /api/images/{id})


# --- little builders --------------------------------------------------------------------------------------

def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def quadrants(width: int = 40, height: int = 30) -> Image.Image:
    """Four solid quadrants (red top-left, green top-right, blue bottom-left, white bottom-right):
    orientation and colour are both visible in a few pixels, and survive JPEG."""
    arr = np.zeros((height, width, 3), dtype=np.uint8)
    hh, hw = height // 2, width // 2
    arr[:hh, :hw] = (255, 0, 0)
    arr[:hh, hw:] = (0, 255, 0)
    arr[hh:, :hw] = (0, 0, 255)
    arr[hh:, hw:] = (255, 255, 255)
    return Image.fromarray(arr, mode="RGB")


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def png_from_rows(width: int, height: int, bit_depth: int, colour_type: int, row: bytes, rows: int | None = None,
                  extra_chunks: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """A PNG written chunk by chunk: ``rows`` copies of the filtered scanline ``row`` (all of them when None).
    Writing it by hand lets a 30000×30000 picture be a few hundred KB without ever existing in memory."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    compressor = zlib.compressobj(9)
    parts = []
    for _ in range(height if rows is None else rows):
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    chunks = [_png_chunk(b"IHDR", ihdr), *(_png_chunk(k, p) for k, p in extra_chunks),
              _png_chunk(b"IDAT", b"".join(parts)), _png_chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def with_exif_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


def jpeg_with_size(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) claims ``width``×``height``."""
    data = bytearray(encode(Image.new("RGB", (16, 16), (10, 20, 30)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def gif_with_screen(width: int, height: int) -> bytes:
    """A GIF whose logical screen and only frame claim ``width``×``height`` (frame data is tiny)."""
    data = bytearray(encode(Image.new("P", (4, 4), 0), "GIF"))
    struct.pack_into("<HH", data, 6, width, height)
    descriptor = data.index(b"\x2c")
    struct.pack_into("<HH", data, descriptor + 5, width, height)
    return bytes(data)


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (24, 16), colour) for colour in ((200, 30, 30), (30, 200, 30), (30, 30, 200))]
    params: dict[str, object] = {"save_all": True, "append_images": frames[1:], "duration": 100, "loop": 0}
    if fmt == "WEBP":
        params["lossless"] = True
    return encode(frames[0], fmt, **params)


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("photo.jpg", b"not really" * 100)
    return buf.getvalue()


@lru_cache(maxsize=1)
def png_bomb_1bit() -> bytes:
    """A complete, valid 30000×30000 black 1-bit PNG: 900 megapixels in a few hundred KB."""
    return png_from_rows(30000, 30000, 1, 0, b"\x00" + b"\x00" * (30000 // 8))


@lru_cache(maxsize=4)
def palette_bomb_png(side: int = 7000) -> bytes:
    """A valid side×side 8-bit palette PNG with a transparent entry (tRNS): one byte per pixel in the file's
    mode, but four once a decoder expands it to RGBA. At 7000×7000 it is ~48 KB."""
    palette = bytes([255, 255, 255, 200, 30, 30, 30, 30, 200] + [0] * (256 * 3 - 9))
    row = b"\x00" + bytes(([0, 1, 2] * side)[:side])
    return png_from_rows(side, side, 8, 3, row, extra_chunks=((b"PLTE", palette), (b"tRNS", b"\x00")))


@lru_cache(maxsize=2)
def many_scans_jpeg(side: int = 4000, extra_scans: int = 2000) -> bytes:
    """A valid progressive JPEG of a flat picture whose last scan is repeated ``extra_scans`` times: each
    repeat is a few bytes, but costs the decoder a pass over every block (2000 at 4000×4000: ~25 s of CPU
    and ~150 KB)."""
    data = encode(Image.new("RGB", (side, side), (120, 130, 140)), "JPEG", progressive=True, quality=90)
    last, end = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")
    return data[:end] + data[last:end] * extra_scans + data[end:]


# --- checks on the stored picture ---------------------------------------------------------------------

def near(colour: tuple[int, int, int], tol: int = 40) -> Callable[[Image.Image, tuple[int, int]], None]:
    def at(picture: Image.Image, xy: tuple[int, int]) -> None:
        got = picture.getpixel(xy)
        assert all(abs(int(g) - int(c)) <= tol for g, c in zip(got, colour)), f"pixel {xy} is {got}, wanted ≈{colour}"
    return at


def quadrants_upright(picture: Image.Image) -> None:
    """Red top-left, green top-right, blue bottom-left, white bottom-right: the way it was drawn."""
    w, h = picture.size
    assert w > h, f"stored {w}×{h}: the picture was not turned back upright"
    near((255, 0, 0))(picture, (w // 4, h // 4))
    near((0, 255, 0))(picture, (3 * w // 4, h // 4))
    near((0, 0, 255))(picture, (w // 4, 3 * h // 4))
    near((255, 255, 255))(picture, (3 * w // 4, 3 * h // 4))


def uniform(colour: tuple[int, int, int], tol: int = 3) -> PictureCheck:
    def check(picture: Image.Image) -> None:
        arr = np.asarray(picture.convert("RGB"), dtype=np.int32)
        assert np.abs(arr - np.array(colour)).max() <= tol, f"expected all ≈{colour}, got {arr.reshape(-1, 3)[:3]}"
    return check


def left_right(left: tuple[int, int, int], right: tuple[int, int, int]) -> PictureCheck:
    def check(picture: Image.Image) -> None:
        w, h = picture.size
        near(left, 3)(picture, (0, h // 2))
        near(right, 3)(picture, (w - 1, h // 2))
    return check


# --- the corpus -------------------------------------------------------------------------------------------

def _odd_modes() -> list[HostileUpload]:
    q = quadrants()
    grey16 = Image.fromarray(np.tile(np.array([0, 65535], dtype=np.uint16).repeat(8), (8, 1)))
    one_bit = Image.fromarray(np.tile(np.array([False, True]).repeat(8), (8, 1)))
    palette = Image.new("P", (16, 8), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    palette.paste(1, (8, 0, 16, 8))
    rgba = Image.new("RGBA", (16, 8), (0, 0, 255, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 8, 8))  # left half fully transparent black
    la = Image.new("LA", (16, 8), (0, 255))
    la.paste((0, 0), (0, 0, 8, 8))
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    float_tiff = Image.fromarray(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8), mode="F")
    ok = 201
    return [
        HostileUpload("cmyk_jpeg", encode(cmyk, "JPEG", quality=95), ok, None, size=(16, 16), check=uniform((255, 0, 0), 40)),
        HostileUpload("png_16bit_grey", encode(grey16, "PNG"), ok, None, "grey16.png", size=(16, 8),
                      check=left_right((0, 0, 0), (255, 255, 255))),
        HostileUpload("png_1bit", encode(one_bit, "PNG"), ok, None, "bits.png", size=(16, 8),
                      check=left_right((0, 0, 0), (255, 255, 255))),
        HostileUpload("png_palette_transparency", encode(palette, "PNG", transparency=0), ok, None, "pal.png",
                      size=(16, 8), check=left_right((255, 255, 255), (0, 0, 255))),
        HostileUpload("png_rgba", encode(rgba, "PNG"), ok, None, "rgba.png", size=(16, 8),
                      check=left_right((255, 255, 255), (0, 0, 255))),
        HostileUpload("png_grey_alpha", encode(la, "PNG"), ok, None, "la.png", size=(16, 8),
                      check=left_right((255, 255, 255), (0, 0, 0))),
        HostileUpload("png_grey", encode(Image.new("L", (10, 10), 128), "PNG"), ok, None, "grey.png",
                      size=(10, 10), check=uniform((128, 128, 128))),
        HostileUpload("jpeg_grey", encode(Image.new("L", (10, 10), 200), "JPEG"), ok, None, size=(10, 10),
                      check=uniform((200, 200, 200), 4)),
        HostileUpload("jpeg_progressive", encode(q, "JPEG", progressive=True, quality=95), ok, None, size=(40, 30),
                      check=quadrants_upright),
        HostileUpload("gif_animated_first_frame", animated("GIF"), ok, None, "anim.gif", size=(24, 16),
                      check=uniform((200, 30, 30), 12)),
        HostileUpload("webp_animated_first_frame", animated("WEBP"), ok, None, "anim.webp", size=(24, 16),
                      check=uniform((200, 30, 30), 3)),
        HostileUpload("webp_still", encode(q, "WEBP", lossless=True), ok, None, "q.webp", size=(40, 30),
                      check=quadrants_upright),
        HostileUpload("bmp", encode(q, "BMP"), ok, None, "q.bmp", size=(40, 30), check=quadrants_upright),
        HostileUpload("tiff_float32", encode(float_tiff, "TIFF"), ok, None, "f.tif", size=(8, 8)),
        HostileUpload("tiff_rgb", encode(q, "TIFF"), ok, None, "q.tiff", size=(40, 30), check=quadrants_upright),
    ]


def _geometry() -> list[HostileUpload]:
    ok = 201
    return [
        HostileUpload("one_by_one", encode(Image.new("RGB", (1, 1), (9, 99, 199)), "PNG"), ok, None, "dot.png",
                      size=(1, 1), check=uniform((9, 99, 199))),
        HostileUpload("wide_strip_5000x1", encode(Image.new("RGB", (5000, 1), (50, 60, 70)), "PNG"), ok, None,
                      "strip.png", size=(2048, 1)),
        HostileUpload("tall_strip_1x5000", encode(Image.new("L", (1, 5000), 30), "PNG"), ok, None, "tall.png",
                      size=(1, 2048)),
        HostileUpload("aspect_3000x2", encode(quadrants(3000, 2), "PNG"), ok, None, "thin.png", size=(2048, 2)),
        HostileUpload("exif_rotate_90cw", with_exif_orientation(quadrants().rotate(90, expand=True), 6), ok, None,
                      size=(40, 30), check=quadrants_upright),
        HostileUpload("exif_rotate_180", with_exif_orientation(quadrants().rotate(180), 3), ok, None,
                      size=(40, 30), check=quadrants_upright),
        HostileUpload("exif_rotate_90ccw", with_exif_orientation(quadrants().rotate(-90, expand=True), 8), ok, None,
                      size=(40, 30), check=quadrants_upright),
        HostileUpload("exif_mirrored", with_exif_orientation(quadrants().transpose(Image.FLIP_LEFT_RIGHT), 2), ok,
                      None, size=(40, 30), check=quadrants_upright),
    ]


def _broken_and_bombs() -> list[HostileUpload]:
    jpeg = encode(quadrants(64, 64), "JPEG", quality=90)
    png = encode(quadrants(64, 64), "PNG")
    bad_crc = bytearray(png)
    idat = bad_crc.index(b"IDAT")
    bad_crc[idat + 8] ^= 0xFF  # a flipped byte inside the image data: the chunk CRC no longer matches
    huge_text = png_from_rows(2, 2, 8, 0, b"\x00\x00\x00", extra_chunks=(
        (b"zTXt", b"comment\x00\x00" + zlib.compress(b"A" * 4_000_000, 9)),))
    return [
        HostileUpload("zero_bytes", b"", 400, "empty_file"),
        HostileUpload("truncated_jpeg", jpeg[: len(jpeg) // 2], 422, "corrupt_image"),
        HostileUpload("truncated_png", png[: len(png) // 2], 422, "corrupt_image", "cut.png"),
        HostileUpload("png_header_only", png[:33], 422, "corrupt_image", "head.png"),
        HostileUpload("jpeg_marker_only", b"\xff\xd8\xff", 422, "corrupt_image"),
        HostileUpload("png_bad_crc", bytes(bad_crc), 422, "corrupt_image", "crc.png"),
        HostileUpload("png_zero_width", png_from_rows(0, 8, 8, 0, b"\x00"), 422, "corrupt_image", "zero.png"),
        HostileUpload("webp_truncated", encode(quadrants(), "WEBP")[:40], 422, "corrupt_image", "cut.webp"),
        HostileUpload("png_text_chunk_bomb", huge_text, 422, "corrupt_image", "text.png"),
        HostileUpload("png_bomb_30000x30000_1bit", png_bomb_1bit(), 413, "image_too_large", "bomb.png"),
        HostileUpload("png_bomb_header_8bit", png_from_rows(30000, 30000, 8, 2, b"\x00" * 90001, rows=16), 413,
                      "image_too_large", "bomb2.png"),
        HostileUpload("jpeg_bomb_header", jpeg_with_size(65000, 65000), 413, "image_too_large"),
        HostileUpload("gif_bomb_header", gif_with_screen(65535, 65535), 413, "image_too_large", "bomb.gif"),
        # Within the pixel limit, but 4 bytes a pixel once the palette with transparency expands (issue 10).
        HostileUpload("png_palette_transparency_7000x7000", palette_bomb_png(7000), 413, "image_too_large", "p.png"),
        HostileUpload("jpeg_2000_empty_scans", many_scans_jpeg(4000, 2000), 422, "image_too_costly", "scans.jpg"),
    ]


def _not_images() -> list[HostileUpload]:
    bad = (415, "unsupported_media_type")
    return [
        HostileUpload("text_as_jpg", b"just some notes from class\n" * 20, *bad),
        HostileUpload("html_as_jpg", b"<!doctype html><html><script>alert(1)</script></html>", *bad, content_type="image/jpeg"),
        HostileUpload("svg_as_jpg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
                      b'<script>alert(1)</script><rect width="10" height="10"/></svg>', *bad, content_type="image/jpeg"),
        HostileUpload("svg_declared", b'<svg xmlns="http://www.w3.org/2000/svg"/>', *bad, "x.svg", "image/svg+xml"),
        HostileUpload("pdf_as_jpg", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n", *bad),
        HostileUpload("zip_as_jpg", zip_bytes(), *bad),
        HostileUpload("gzip_as_png", zlib.compress(b"x" * 1000), *bad, "x.png"),
        HostileUpload("elf_as_jpg", b"\x7fELF\x02\x01\x01" + b"\x00" * 200, *bad),
        HostileUpload("json_as_png", b'{"image": "nope"}', *bad, "x.png", "application/json"),
        HostileUpload("random_bytes", np.random.default_rng(6).integers(0, 256, 4096, dtype=np.uint8).tobytes(), *bad),
        HostileUpload("ico_not_allowed", encode(Image.new("RGB", (16, 16)), "ICO"), *bad, "x.ico"),
        HostileUpload("gif_html_polyglot", b"GIF89a<html><script>alert(1)</script></html>", 422, "corrupt_image",
                      "poly.gif"),
    ]


def _names_and_types() -> list[HostileUpload]:
    png = encode(quadrants(), "PNG")
    ok = 201
    cases = [
        ("name_path_traversal", "../../../../etc/passwd", "image/png"),
        ("name_encoded_traversal", "..%2F..%2Fserver%2Fmain.py", "image/png"),
        ("name_windows_path", "C:\\Windows\\System32\\evil.png", "image/png"),
        ("name_unicode", "Ünïcødé 画像 😀.png", "image/png"),
        ("name_very_long", "a" * 5000 + ".png", "image/png"),
        ("name_empty_extension", "noextension", "image/png"),
        ("type_wrong_declared", "photo.gif", "image/gif"),
        ("type_text_declared", "photo.png", "text/plain"),
        ("type_missing", "photo.png", None),
    ]
    accepted = [HostileUpload(name, png, ok, None, filename, ctype, size=(40, 30), check=quadrants_upright)
                for name, filename, ctype in cases]
    return accepted + [HostileUpload("name_over_header_limit", png, 400, "malformed_multipart", "b" * 40_000 + ".png")]


def hostile_uploads() -> list[HostileUpload]:
    """Every case: name, bytes, expected status and error code (None when it must be accepted)."""
    corpus = _broken_and_bombs() + _not_images() + _odd_modes() + _geometry() + _names_and_types()
    names = [case.name for case in corpus]
    assert len(names) == len(set(names)), "case names must be unique"
    return corpus
