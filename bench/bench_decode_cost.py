"""What a decode costs, by format, mode and size: the CPU seconds of ``decode_worker.decode_image`` (the code
each upload's child process runs) against the work the server judges it by before decoding
(``decoded_bytes_per_pixel`` × the decoded size, in MB). Prints one row per file and, per mode, the CPU
milliseconds per MB of judged work, so the default ``CONVSCOPE_MAX_DECODED_BYTES`` can be chosen as a time.

CPU time (``time.process_time``), best of ``--repeat``, so a busy shared machine disturbs it less than wall
time. Files are generated (noise and gradients at sizes real files have) plus the photos in
``../shared/data/images`` when present.

    python bench/bench_decode_cost.py [--sides 2000,4000,7000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import io
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from server.services.images import decode_worker as dw

PHOTOS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "images"


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def corpus(side: int) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(side)
    ramp = np.tile(np.linspace(0, 255, side, dtype=np.uint8), (side, 1))
    rgb = np.stack([ramp, ramp.T, ramp[::-1]], -1)
    bits = Image.fromarray(rng.integers(0, 2, (side, side), dtype=np.uint8).astype(bool)).convert("1")
    return [
        ("PNG 1-bit noise", encode(bits, "PNG")),
        ("PNG grey ramp", encode(Image.fromarray(ramp, "L"), "PNG")),
        ("PNG palette ramp", encode(Image.fromarray(ramp, "L").convert("P"), "PNG")),
        ("PNG RGB ramp", encode(Image.fromarray(rgb, "RGB"), "PNG")),
        ("PNG 16-bit ramp", encode(Image.fromarray(ramp.astype(np.uint16) * 257), "PNG")),
        ("JPEG RGB q90", encode(Image.fromarray(rgb, "RGB"), "JPEG", quality=90)),
    ]


def cpu_seconds(data: bytes, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        dw.decode_image(data, 10**9, 10**12)
        best = min(best, time.process_time() - start)
    return best


def judged_mb(data: bytes) -> tuple[str, tuple[int, int], float]:
    with Image.open(io.BytesIO(data)) as image:
        width, height = dw.decoded_size(image)
        return image.mode, image.size, width * height * dw.decoded_bytes_per_pixel(image) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sides", default="2000,4000,7000")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    files = [(f"{name} {side}²", data) for side in map(int, args.sides.split(",")) for name, data in corpus(side)]
    if PHOTOS.is_dir():
        files += [(f"photo {path.name}", path.read_bytes()) for path in sorted(PHOTOS.iterdir()) if path.is_file()]
    per_mode: dict[str, list[float]] = defaultdict(list)
    print(f"{'file':<28} {'bytes':>9} {'mode':>5} {'size':>11} {'work MB':>8} {'CPU s':>7} {'ms/MB':>6}")
    for name, data in files:
        try:
            mode, size, work = judged_mb(data)
        except Exception:  # noqa: BLE001 - not an image Pillow opens: not part of the measurement
            continue
        seconds = cpu_seconds(data, args.repeat)
        per_mode[mode].append(seconds * 1000 / max(work, 1e-9))
        print(f"{name:<28} {len(data):>9,} {mode:>5} {size[0]:>5}×{size[1]:<5} {work:>8.1f} {seconds:>7.2f} "
              f"{seconds * 1000 / max(work, 1e-9):>6.1f}")
    print("\nCPU ms per MB of judged work, by mode (median, max):")
    for mode, values in sorted(per_mode.items()):
        print(f"  {mode:>5}: {np.median(values):6.1f} {max(values):6.1f}  ({len(values)} files)")


if __name__ == "__main__":
    main()
