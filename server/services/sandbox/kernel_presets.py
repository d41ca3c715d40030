"""The course's kernels and small example inputs, and Gabor kernels with adjustable parameters."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# id → (title, kernel rows, what it teaches)
KERNELS: dict[str, tuple[str, list[list[float]], str]] = {
    "identity": ("Identity", [[0, 0, 0], [0, 1, 0], [0, 0, 0]], "copies the input"),
    "box_blur": ("Box blur", [[1 / 9] * 3] * 3, "the average of the 3×3 neighbourhood"),
    "gaussian_blur": ("Gaussian blur", [[1 / 16, 2 / 16, 1 / 16], [2 / 16, 4 / 16, 2 / 16], [1 / 16, 2 / 16, 1 / 16]],
                      "a weighted average, heavier in the centre"),
    "sharpen": ("Sharpen", [[0, -1, 0], [-1, 5, -1], [0, -1, 0]], "the centre minus its neighbours, plus itself"),
    "sobel_x": ("Sobel x", [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], "left-to-right brightness change: vertical edges"),
    "sobel_y": ("Sobel y", [[-1, -2, -1], [0, 0, 0], [1, 2, 1]], "top-to-bottom brightness change: horizontal edges"),
    "prewitt_x": ("Prewitt x", [[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]], "vertical edges, unweighted rows"),
    "prewitt_y": ("Prewitt y", [[-1, -1, -1], [0, 0, 0], [1, 1, 1]], "horizontal edges, unweighted columns"),
    "vertical_edge": ("Vertical edge [−1 0 1]", [[-1, 0, 1]], "a 1×3 difference across columns"),
    "horizontal_edge": ("Horizontal edge [−1 0 1]ᵀ", [[-1], [0], [1]], "a 3×1 difference across rows"),
    "laplacian": ("Laplacian", [[0, 1, 0], [1, -4, 1], [0, 1, 0]], "second derivative: edges in every direction"),
    "edge": ("Edge (all directions)", [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], "centre against all eight neighbours"),
}

# id → (title, input rows)
EXAMPLES: dict[str, tuple[str, list[list[float]]]] = {
    "slide_5x5": ("5×5 binary image (the classic slide)", [
        [1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]]),
    "vertical_step_6x6": ("6×6 vertical step (10 | 0)", [[10, 10, 10, 0, 0, 0] for _ in range(6)]),
    "impulse_7x7": ("7×7 single bright pixel (shows the kernel, or its flip)",
                    [[1 if (r, c) == (3, 3) else 0 for c in range(7)] for r in range(7)]),
    "pool_4x4": ("4×4 pooling example", [[1, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]]),
    "diagonal_8x8": ("8×8 diagonal line", [[1 if r == c else 0 for c in range(8)] for r in range(8)]),
    "square_10x10": ("10×10 bright square", [[1 if 3 <= r <= 6 and 3 <= c <= 6 else 0 for c in range(10)]
                                             for r in range(10)]),
    "signed_6x6": ("6×6 signed values", [[((r * 7 + c * 3) % 9) - 4 for c in range(6)] for r in range(6)]),
}

GABOR_LIMITS = {"size": (3, 7), "wavelength": (2.0, 20.0), "sigma": (0.5, 6.0), "gamma": (0.2, 2.0)}


def gabor(size: int = 7, theta_deg: float = 0.0, wavelength: float = 4.0, sigma: float | None = None,
          gamma: float = 0.5, psi_deg: float = 0.0) -> list[list[float]]:
    """A real Gabor kernel: a cosine grating of ``wavelength`` cells across orientation θ, under a Gaussian
    envelope (σ, aspect ratio γ), shifted to zero mean so flat regions give 0 (like first-layer filters).

        g(x, y) = exp(−(x'² + γ²y'²) / 2σ²) · cos(2π x'/λ + ψ),  x' = x cos θ + y sin θ,  y' = −x sin θ + y cos θ
    """
    half = size // 2
    sigma = 0.56 * wavelength if sigma is None else sigma  # about one octave of bandwidth
    theta, psi = math.radians(theta_deg), math.radians(psi_deg)
    ys, xs = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float64)
    xr = xs * math.cos(theta) + ys * math.sin(theta)
    yr = -xs * math.sin(theta) + ys * math.cos(theta)
    envelope = np.exp(-(xr**2 + (gamma * yr) ** 2) / (2 * sigma**2))
    g = envelope * np.cos(2 * math.pi * xr / wavelength + psi)
    g -= g.mean()
    peak = np.abs(g).max()
    g = g / peak if peak > 1e-12 else g
    return np.round(g, 4).tolist()


def catalogue() -> dict[str, Any]:
    """Everything the sandbox's preset menus show."""
    return {
        "kernels": [{"id": k, "title": t, "kernel": v, "note": n} for k, (t, v, n) in KERNELS.items()],
        "examples": [{"id": k, "title": t, "input": v} for k, (t, v) in EXAMPLES.items()],
        "gabor": {"limits": GABOR_LIMITS, "default": {"size": 7, "theta": 0, "wavelength": 4, "gamma": 0.5, "psi": 0}},
    }


def kernel_by_name(name: str, **params: Any) -> list[list[float]]:
    """A preset kernel by id, or ``gabor`` with its parameters; KeyError when unknown."""
    if name == "gabor":
        return gabor(**params)
    return KERNELS[name][1]
