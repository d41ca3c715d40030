"""Covering part of the image: square patches (grey, blurred or noise) pasted on the model input, every patch
of a request classified in one batched forward pass; and the map of the positions a user visited.

Patches are placed in model-input pixels: ``y``, ``x`` the top-left corner, ``size`` the side; the part
outside the image is clipped away. Fills are in pixel space [0, 1] before normalisation: grey is 0.5, blur
is the image blurred with a Gaussian of σ = size / 4 (so the patch hides detail of its own scale), noise is
uniform, drawn from a generator seeded by the position (the same patch at the same place is the same).

The occlusion map uses the rule of the occlusion saliency method (Zeiler & Fergus 2014): a pixel's value
is the drop of the class's score — here its probability — averaged over the patches that covered it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from server.errors import ApiError
from server.services.experiments.adversarial import PixelModel
from server.services.work.cancel import checkpoint

FILLS = ("grey", "blur", "noise")
GREY = 0.5


@dataclass(frozen=True)
class Patch:
    y: int
    x: int
    size: int
    fill: str = "grey"

    def box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) clipped to the image; empty when the patch misses it."""
        return max(0, self.y), max(0, self.x), min(height, self.y + self.size), min(width, self.x + self.size)

    def noise(self, channels: int) -> torch.Tensor:
        """C×size×size uniform noise, seeded by the position."""
        seed = (self.y + 2**15) * 2**17 + (self.x + 2**15) * 2 + 1
        generator = torch.Generator().manual_seed(seed)
        return torch.rand((channels, self.size, self.size), generator=generator)


def blurred(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """``pixels`` (1×C×H×W) blurred for patches of ``size``: Gaussian, σ = size / 4 (at least 1).

    torchvision's ``gaussian_blur`` with reflection padding, computed as its two 1-D passes (the Gaussian is
    separable): the same numbers, but 2k instead of k² multiplications a pixel. With k up to 2·H−1 that is
    what keeps a large blurred patch cheap (224 px on a 224×224 input: 1.8 s as one 2-D kernel)."""
    sigma = max(1.0, size / 4.0)
    height, width = int(pixels.shape[-2]), int(pixels.shape[-1])
    kernel = 2 * math.ceil(2 * sigma) + 1
    limit = 2 * min(height, width) - 1  # reflection padding needs the kernel's half below the image side
    kernel = min(kernel, limit if limit % 2 == 1 else limit - 1)
    if kernel < 3:
        return pixels.clone()
    half, channels = kernel // 2, int(pixels.shape[1])
    x = torch.linspace(-half, half, kernel, dtype=pixels.dtype, device=pixels.device)
    taps = torch.exp(-0.5 * (x / sigma) ** 2)
    taps = taps / taps.sum()  # torchvision's 1-D kernel (its 2-D kernel is the outer product of two)
    padded = F.pad(pixels, [half, half, half, half], mode="reflect")
    rows = F.conv2d(padded, taps.reshape(1, 1, 1, kernel).expand(channels, 1, 1, kernel), groups=channels)
    return F.conv2d(rows, taps.reshape(1, 1, kernel, 1).expand(channels, 1, kernel, 1), groups=channels)


def occluded(pixels: torch.Tensor, patches: list[Patch], blurs: dict[int, torch.Tensor]) -> torch.Tensor:
    """N×C×H×W: ``pixels`` (1×C×H×W) with each patch pasted on its own copy; ``blurs`` by patch size."""
    _, channels, height, width = pixels.shape
    batch = pixels.repeat(len(patches), 1, 1, 1)
    for row, patch in enumerate(patches):
        top, left, bottom, right = patch.box(int(height), int(width))
        if bottom <= top or right <= left:
            continue
        if patch.fill == "grey":
            batch[row, :, top:bottom, left:right] = GREY
        elif patch.fill == "blur":
            batch[row, :, top:bottom, left:right] = blurs[patch.size][0, :, top:bottom, left:right]
        else:
            noise = patch.noise(int(channels)).to(pixels.device, pixels.dtype)
            oy, ox = top - patch.y, left - patch.x
            batch[row, :, top:bottom, left:right] = noise[:, oy : oy + bottom - top, ox : ox + right - left]
    return batch


def pasted(model: PixelModel, tensor: torch.Tensor, patch: Patch) -> torch.Tensor:
    """The model input ``tensor`` (normalised, C×H×W) with ``patch`` pasted as the probe pastes it."""
    pixels = model.pixels(tensor.unsqueeze(0))
    blurs = {patch.size: blurred(pixels, patch.size)} if patch.fill == "blur" else {}
    return model.normalise(occluded(pixels, [patch], blurs))[0]


def parse_patch(message: object) -> Patch | None:
    """A live client's ``{"patch": {"y", "x", "size", "fill"}}`` (or ``{"patch": null}``: no patch), checked
    for types and ranges; an ApiError names the field otherwise (the size against the input is the caller's)."""
    if not isinstance(message, dict) or set(message) != {"patch"}:
        raise ApiError(400, "binary_frames_expected", 'A text message is {"patch": {"y", "x", "size", "fill"}} or '
                       '{"patch": null}; frames are binary messages holding JPEG or PNG bytes.')
    body = message["patch"]
    if body is None:
        return None
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_patch", "patch: an object with y, x, size and fill, or null.")
    values = {}
    for name, low in (("y", -4096), ("x", -4096), ("size", 1)):
        value = body.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= 4096:
            raise ApiError(422, "invalid_patch", f"patch.{name}: a whole number from {low} to 4096.")
        values[name] = value
    fill = body.get("fill", "grey")
    if fill not in FILLS:
        raise ApiError(422, "invalid_patch", f"patch.fill: one of {', '.join(FILLS)}.")
    return Patch(values["y"], values["x"], values["size"], fill)


def probe_logits(model: PixelModel, pixels: torch.Tensor, patches: list[Patch], blurs: dict[int, torch.Tensor],
                 chunk: int) -> torch.Tensor:
    """N×classes logits of the occluded copies, ``chunk`` patches per forward pass; a checkpoint before each
    pass (the request's client gone: the work stops there)."""
    out = []
    with torch.no_grad():
        for start in range(0, len(patches), chunk):
            checkpoint()
            out.append(model(occluded(pixels, patches[start : start + chunk], blurs)).float().cpu())
    return torch.cat(out).reshape(len(patches), -1)


def occlusion_map(patches: list[Patch], drops: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(H×W mean drop over the patches covering each pixel, H×W how many covered it)."""
    total = torch.zeros((height, width), dtype=torch.float64)
    counts = torch.zeros((height, width), dtype=torch.float64)
    for patch, drop in zip(patches, drops.tolist()):
        top, left, bottom, right = patch.box(height, width)
        total[top:bottom, left:right] += drop
        counts[top:bottom, left:right] += 1
    return total / counts.clamp(min=1), counts
