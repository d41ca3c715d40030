"""The sandbox: small grids convolved and pooled step by step, presets, and kernels on whole pictures."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from server.deps import ImageStoreDep, SchedulerDep
from server.errors import ApiError
from server.responses import png_response
from server.services import image_filter, kernel_presets, sandbox

router = APIRouter(prefix="/api", tags=["sandbox"])

# Pydantic caps the nesting far above the sandbox limits so a huge body is refused early; the service
# then says precisely what the limit is.
Row = Annotated[list[float], Field(max_length=64)]
Grid = Annotated[list[Row], Field(max_length=64)]
PaddingSpec = int | Literal["valid", "same", "full"] | Annotated[list[int], Field(min_length=4, max_length=4)]
Mode = Literal["cross-correlation", "convolution"]
Activation = Literal["none", "relu", "leaky_relu", "relu6", "softplus", "abs"]


class ConvolveRequest(BaseModel):
    input: Grid
    kernel: Grid
    padding: PaddingSpec = 0
    stride: int = 1
    dilation: int = 1
    mode: Mode = "cross-correlation"
    bias: float = 0.0
    activation: Activation = "none"
    negative_slope: float = 0.01


class PoolRequest(BaseModel):
    input: Grid
    kernel_size: int = 2
    stride: int | None = None
    padding: int = 0
    op: Literal["max", "avg", "l2"] = "max"


class ShiftRequest(BaseModel):
    input: Grid
    kernel: Grid
    dy: int = 0
    dx: int = 1
    pool_size: int = 2
    pool_op: Literal["max", "avg", "l2"] = "max"


class MixRequest(BaseModel):
    channels: Annotated[list[Grid], Field(max_length=64)]
    weights: Grid
    bias: Annotated[list[float], Field(max_length=64)] | None = None


@router.post("/sandbox/mix")
def mix(body: MixRequest) -> dict[str, Any]:
    """A 1×1 convolution over several channels (channel mixing), every product returned."""
    return sandbox.mix_channels(body.channels, body.weights, body.bias)


@router.post("/sandbox/convolve")
def convolve(body: ConvolveRequest, work: SchedulerDep) -> dict[str, Any]:
    return work.run("sandbox/convolve", lambda: sandbox.convolve(
        body.input, body.kernel, body.padding, body.stride, body.dilation, body.mode, body.bias, body.activation,
        body.negative_slope))


@router.post("/sandbox/pool")
def pool(body: PoolRequest, work: SchedulerDep) -> dict[str, Any]:
    return work.run("sandbox/pool", lambda: sandbox.pool(body.input, body.kernel_size, body.stride, body.padding,
                                                         body.op))


@router.post("/sandbox/shift")
def shift(body: ShiftRequest, work: SchedulerDep) -> dict[str, Any]:
    sandbox.as_grid(body.kernel, "kernel", sandbox.MAX_KERNEL)
    return work.run("sandbox/shift", lambda: sandbox.translation_demo(body.input, body.kernel, body.dy, body.dx,
                                                                      body.pool_size, body.pool_op))


@router.get("/sandbox/presets")
async def presets() -> dict[str, Any]:  # no model work, no thread: never waits behind model work
    return kernel_presets.catalogue()


GaborSize = Annotated[int, Query(ge=3, le=7)]


@router.get("/sandbox/kernels/gabor")
def gabor(size: GaborSize = 7, theta: Annotated[float, Query(ge=-360, le=360)] = 0.0,
          wavelength: Annotated[float, Query(ge=2, le=20)] = 4.0,
          sigma: Annotated[float | None, Query(ge=0.5, le=6)] = None,
          gamma: Annotated[float, Query(ge=0.2, le=2)] = 0.5,
          psi: Annotated[float, Query(ge=-360, le=360)] = 0.0) -> dict[str, Any]:
    return {"kernel": kernel_presets.gabor(size, theta, wavelength, sigma, gamma, psi)}


def parse_kernel(text: str) -> list[list[float]]:
    """``"1,0,-1;2,0,-2;1,0,-1"`` → rows (the URL form of a kernel, so a link reproduces it)."""
    try:
        rows = [[float(v) for v in row.split(",")] for row in text.split(";")]
    except ValueError:
        raise ApiError(422, "invalid_kernel", "kernel must be numbers, commas between columns, ';' between rows.") from None
    return sandbox.as_grid(rows, "kernel", sandbox.MAX_KERNEL).tolist()


def _padding_param(text: str) -> Any:
    if text in ("valid", "same", "full"):
        return text
    try:
        return int(text)
    except ValueError:
        raise ApiError(422, "invalid_padding", "padding must be valid, same, full or a number.") from None


@router.get("/sandbox/images/{image_id}/filtered.png")
def filtered_image(image_id: str, store: ImageStoreDep, work: SchedulerDep,
                   preset: str | None = None, kernel: str | None = None,
                   padding: str = "same", stride: Annotated[int, Query(ge=1, le=8)] = 1,
                   dilation: Annotated[int, Query(ge=1, le=6)] = 1, mode: Mode = "cross-correlation",
                   theta: float = 0.0, wavelength: Annotated[float, Query(ge=2, le=20)] = 4.0) -> Response:
    """The kernel (a preset id, ``gabor`` with theta/wavelength, or ``kernel=`` rows) over the grey picture,
    as a colour-mapped PNG; headers ``X-ConvScope-Min``/``Max``/``Colormap`` give the legend."""
    if kernel is not None:
        rows = parse_kernel(kernel)
    elif preset == "gabor":
        rows = kernel_presets.gabor(7, theta, wavelength)
    elif preset in kernel_presets.KERNELS:
        rows = kernel_presets.kernel_by_name(preset)
    else:
        raise ApiError(422, "invalid_kernel", f"Give kernel= rows or a preset: {', '.join(kernel_presets.KERNELS)}, gabor.")
    image = store.open_image(image_id)
    result = work.run("sandbox/filtered", lambda: image_filter.filter_image(
        image, rows, _padding_param(padding), stride, dilation, mode))
    legend = result.legend()
    return png_response(result.png, {
        "X-ConvScope-Min": f"{legend['min']:.6g}",
        "X-ConvScope-Max": f"{legend['max']:.6g}",
        "X-ConvScope-Colormap": legend["colormap"],
        "X-ConvScope-Shape": f"{result.values.shape[0]}x{result.values.shape[1]}",
    })


@router.get("/sandbox/images/{image_id}/crop")
def image_crop(image_id: str, store: ImageStoreDep, size: Annotated[int, Query(ge=2, le=16)] = 8,
               fit: Annotated[int, Query(ge=8, le=256)] = 32,
               cy: Annotated[float | None, Query(ge=0, le=1)] = None,
               cx: Annotated[float | None, Query(ge=0, le=1)] = None) -> dict[str, Any]:
    """A small grey crop of an uploaded picture to start the sandbox from."""
    return image_filter.crop(store.open_image(image_id), size, fit, cy, cx)
