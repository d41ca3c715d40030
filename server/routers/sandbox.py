"""The sandbox: small grids convolved and pooled step by step, presets, and kernels on whole pictures."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, BeforeValidator, Field

from server.deps import ImageStoreDep, SchedulerDep
from server.errors import ApiError
from server.openapi import json_example
from server.responses import png_response
from server.services.sandbox import image_filter, kernel_presets
from server.services.sandbox import operations as sandbox

router = APIRouter(prefix="/api", tags=["sandbox"])

# The schema states every bound the sandbox has (sizes, ranges, finite numbers); what JSON Schema cannot
# state (rows of one length, a window that fits the padded input) the service checks and names (422).
def _json_number(value: Any) -> Any:
    """JSON true/false or "3" are not numbers, as the schema says (pydantic's lax mode would take them)."""
    if isinstance(value, (bool, str)):
        raise ValueError("must be a JSON number")
    return value


Number = BeforeValidator(_json_number)
Value = Annotated[float, Field(ge=-sandbox.MAX_ABS_VALUE, le=sandbox.MAX_ABS_VALUE, allow_inf_nan=False), Number]
Grid = Annotated[list[Annotated[list[Value], Field(min_length=1, max_length=sandbox.MAX_INPUT)]],
                 Field(min_length=1, max_length=sandbox.MAX_INPUT,
                       description=f"rows of equal length, at most {sandbox.MAX_INPUT}×{sandbox.MAX_INPUT}",
                       examples=[[[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]]])]
Kernel = Annotated[list[Annotated[list[Value], Field(min_length=1, max_length=sandbox.MAX_KERNEL)]],
                   Field(min_length=1, max_length=sandbox.MAX_KERNEL,
                         description=f"rows of equal length, at most {sandbox.MAX_KERNEL}×{sandbox.MAX_KERNEL}",
                         examples=[[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]])]
Pad = Annotated[int, Field(ge=0, le=sandbox.MAX_PAD), Number]
PaddingSpec = Annotated[Pad | Literal["valid", "same", "full"] | Annotated[list[Pad], Field(min_length=4, max_length=4)],
                        Field(description="zeros added around the input: one number, a name, or [top, bottom, left, right]")]
Stride = Annotated[int, Field(ge=1, le=sandbox.MAX_STRIDE), Number]
Dilation = Annotated[int, Field(ge=1, le=sandbox.MAX_DILATION), Number]
PoolSize = Annotated[int, Field(ge=1, le=sandbox.MAX_KERNEL), Number]
Mode = Literal["cross-correlation", "convolution"]
Activation = Literal["none", "relu", "leaky_relu", "relu6", "softplus", "abs"]
Shift = Annotated[int, Field(ge=-(sandbox.MAX_INPUT - 1), le=sandbox.MAX_INPUT - 1,
                             description="smaller in size than the input"), Number]


class ConvolveRequest(BaseModel):
    input: Grid
    kernel: Kernel
    padding: PaddingSpec = 0
    stride: Stride = 1
    dilation: Dilation = 1
    mode: Mode = "cross-correlation"
    bias: Value = 0.0
    activation: Activation = "none"
    negative_slope: Annotated[float, Field(ge=-100, le=100, allow_inf_nan=False, description="leaky_relu's slope"), Number] = 0.01


class PoolRequest(BaseModel):
    input: Grid
    kernel_size: PoolSize = 2
    stride: Stride | None = Field(None, description="default: kernel_size")
    padding: Annotated[int, Field(ge=0, le=sandbox.MAX_KERNEL // 2, description="at most half the kernel size"), Number] = 0
    op: Literal["max", "avg", "l2"] = "max"


class ShiftRequest(BaseModel):
    input: Grid
    kernel: Kernel
    dy: Shift = 0
    dx: Shift = 1
    pool_size: PoolSize = 2
    pool_op: Literal["max", "avg", "l2"] = "max"


MixGrid = Annotated[list[Annotated[list[Value], Field(min_length=1, max_length=sandbox.MAX_MIX_SIDE)]],
                    Field(min_length=1, max_length=sandbox.MAX_MIX_SIDE, description="one channel, rows of equal length")]
MixRow = Annotated[list[Value], Field(min_length=1, max_length=sandbox.MAX_MIX_CHANNELS)]


class MixRequest(BaseModel):
    channels: Annotated[list[MixGrid], Field(min_length=1, max_length=sandbox.MAX_MIX_CHANNELS,
                                             description="C_in channels of one height and width",
                                             examples=[[[[0, 1], [1, 0]], [[1, 1], [0, 0]]]])]
    weights: Annotated[list[MixRow], Field(min_length=1, max_length=sandbox.MAX_MIX_CHANNELS,
                                           description="C_out rows of C_in weights (the 1×1 kernels)",
                                           examples=[[[0.5, 0.5], [1, -1]]])]
    bias: Annotated[list[Value], Field(min_length=1, max_length=sandbox.MAX_MIX_CHANNELS,
                                       description="one per output channel", examples=[[0, 0.5]])] | None = None


@router.post("/sandbox/mix", summary="A 1×1 convolution over several channels (channel mixing), every product shown")
def mix(body: MixRequest, work: SchedulerDep) -> dict[str, Any]:
    """A 1×1 convolution over several channels (channel mixing), every product returned."""
    return work.run("sandbox/mix", lambda: sandbox.mix_channels(body.channels, body.weights, body.bias))


CONVOLVE_EXAMPLE = {"output": [[4.0, 0.0]], "with_bias": [[4.0, 0.0]], "activated": [[4.0, 0.0]],
                    "kernel": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], "mode": "cross-correlation", "steps": [
                        {"out": [0, 0], "cells": [[0, 0], [0, 1], [0, 2]], "inputs": [0, 0, 1],
                         "products": [0, 0, 1], "sum": 4.0}]}


@router.post("/sandbox/convolve", summary="Convolve a small grid with a kernel, every step shown",
             responses=json_example(CONVOLVE_EXAMPLE))
def convolve(body: ConvolveRequest, work: SchedulerDep) -> dict[str, Any]:
    return work.run("sandbox/convolve", lambda: sandbox.convolve(
        body.input, body.kernel, body.padding, body.stride, body.dilation, body.mode, body.bias, body.activation,
        body.negative_slope))


@router.post("/sandbox/pool", summary="Pool a small grid (max, average or L2), every step shown")
def pool(body: PoolRequest, work: SchedulerDep) -> dict[str, Any]:
    return work.run("sandbox/pool", lambda: sandbox.pool(body.input, body.kernel_size, body.stride, body.padding,
                                                         body.op))


@router.post("/sandbox/shift", summary="Translation equivariance: convolve a grid and its shifted copy, then pool")
def shift(body: ShiftRequest, work: SchedulerDep) -> dict[str, Any]:
    sandbox.as_grid(body.kernel, "kernel", sandbox.MAX_KERNEL)
    return work.run("sandbox/shift", lambda: sandbox.translation_demo(body.input, body.kernel, body.dy, body.dx,
                                                                      body.pool_size, body.pool_op))


@router.get("/sandbox/presets", summary="The kernel presets (Sobel, blur, sharpen…) with their values")
async def presets() -> dict[str, Any]:  # no model work, no thread: never waits behind model work
    return kernel_presets.catalogue()


GaborSize = Annotated[int, Query(ge=3, le=7)]


@router.get("/sandbox/kernels/gabor", summary="A Gabor kernel (orientation θ, wavelength, σ, γ, phase ψ in degrees)")
def gabor(size: GaborSize = 7, theta: Annotated[float, Query(ge=-360, le=360, allow_inf_nan=False)] = 0.0,
          wavelength: Annotated[float, Query(ge=2, le=20, allow_inf_nan=False)] = 4.0,
          sigma: Annotated[float | None, Query(ge=0.5, le=6, allow_inf_nan=False)] = None,
          gamma: Annotated[float, Query(ge=0.2, le=2, allow_inf_nan=False)] = 0.5,
          psi: Annotated[float, Query(ge=-360, le=360, allow_inf_nan=False)] = 0.0) -> dict[str, Any]:
    return {"kernel": kernel_presets.gabor(size, theta, wavelength, sigma, gamma, psi)}


def parse_kernel(text: str) -> list[list[float]]:
    """``"1,0,-1;2,0,-2;1,0,-1"`` → rows (the URL form of a kernel, so a link reproduces it)."""
    try:
        rows = [[float(v) for v in row.split(",")] for row in text.split(";")]
    except ValueError:
        raise ApiError(422, "invalid_kernel", "kernel must be numbers, commas between columns, ';' between rows.") from None
    return sandbox.as_grid(rows, "kernel", sandbox.MAX_KERNEL).tolist()


def _padding_param(text: str | int) -> Any:
    if isinstance(text, int):
        return text
    if text in ("valid", "same", "full"):
        return text
    try:
        return int(text)
    except ValueError:
        raise ApiError(422, "invalid_padding", "padding must be valid, same, full or a number.") from None


MAX_FILTER_PAD = 32  # around a picture of at most 512 px: a visible frame, and the cost stays bounded
PresetQuery = Annotated[Literal[(*kernel_presets.KERNELS, "gabor")],  # type: ignore[valid-type]
                        Query(description="a preset kernel (see /api/sandbox/presets) or gabor (with theta, "
                                          "wavelength); ignored when kernel= is given")]
_NUMBER = r"-?[0-9]{1,6}(\.[0-9]{1,6})?"
_ROW = rf"{_NUMBER}(,{_NUMBER}){{0,{sandbox.MAX_KERNEL - 1}}}"
KernelQuery = Annotated[str | None, Query(max_length=1024, pattern=rf"^{_ROW}(;{_ROW}){{0,{sandbox.MAX_KERNEL - 1}}}$",
                                          description="kernel rows: commas between columns, ';' between rows "
                                                      "(rows of equal length, at most 7×7), e.g. 1,0,-1;2,0,-2;1,0,-1",
                                          examples=["1,0,-1;2,0,-2;1,0,-1"])]
FilterPadding = Annotated[Literal["valid", "same", "full"] | Annotated[int, Field(ge=0, le=MAX_FILTER_PAD)],
                          Query(description=f"valid, same, full, or 0–{MAX_FILTER_PAD} pixels of zeros")]


@router.get("/sandbox/images/{image_id}/filtered.png")
def filtered_image(image_id: str, store: ImageStoreDep, work: SchedulerDep,
                   preset: PresetQuery = "sobel_x", kernel: KernelQuery = None,
                   padding: FilterPadding = "same", stride: Annotated[int, Query(ge=1, le=8)] = 1,
                   dilation: Annotated[int, Query(ge=1, le=6)] = 1, mode: Mode = "cross-correlation",
                   theta: Annotated[float, Query(ge=-360, le=360, allow_inf_nan=False)] = 0.0,
                   wavelength: Annotated[float, Query(ge=2, le=20, allow_inf_nan=False)] = 4.0) -> Response:
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
               cy: Annotated[float | None, Query(ge=0, le=1, allow_inf_nan=False)] = None,
               cx: Annotated[float | None, Query(ge=0, le=1, allow_inf_nan=False)] = None) -> dict[str, Any]:
    """A small grey crop of an uploaded picture to start the sandbox from."""
    return image_filter.crop(store.open_image(image_id), size, fit, cy, cx)
