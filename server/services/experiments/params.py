"""Checks of experiment parameters against the model (what a schema cannot state): each failure is a 4xx
``ApiError`` whose message starts with the parameter's name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from server.errors import ApiError
from server.services.experiments.ablation import AblationSpec
from server.services.experiments.occlusion_probe import Patch
from server.services.runtime.model_runtime import LoadedModel, ModelLayer

MAX_CHANNEL_TEXT = 4000  # "3,5,…": long lists use invert=true ("all but these")


def layer_row(rows: Sequence[dict[str, Any]], loaded: LoadedModel, name: str) -> dict[str, Any]:
    """The architecture row of the (resolved) layer ``name``; 422 when its output has no channels."""
    row = next((r for r in rows if r["name"] == name), None)
    if row is None or len(row.get("output_shape") or ()) not in (1, 3):
        raise ApiError(422, "layer_has_no_channels",
                       f"layer: {name!r} of {loaded.entry.id} does not output a feature map or vector to edit.")
    return row


def parse_channels(text: str, count: int, layer: str, invert: bool) -> tuple[int, ...]:
    """The channels to edit: ``text`` is comma-separated indices; ``invert``: every channel but those."""
    if len(text) > MAX_CHANNEL_TEXT:
        raise ApiError(422, "invalid_channels", "channels: too long a list; use invert=true to name the channels kept.")
    picked: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if not part.isdigit():
            raise ApiError(422, "invalid_channels", f"channels: {part[:20]!r} is not a channel index (comma-separated integers).")
        index = int(part)
        if index >= count:
            raise ApiError(404, "unknown_channel",
                           f"channels: layer {layer!r} has channels 0 to {count - 1}; there is no {index}.")
        picked.add(index)
    chosen = sorted(set(range(count)) - picked) if invert else sorted(picked)
    if not chosen:
        raise ApiError(422, "invalid_channels", "channels: no channel to edit" + (" (invert=true kept them all)." if invert else "."))
    return tuple(chosen)


def ablation_spec(row: dict[str, Any], layer: ModelLayer, channels: str, mode: str, factor: float,
                  invert: bool) -> AblationSpec:
    count = int(row["output_shape"][0])
    return AblationSpec(layer.name, parse_channels(channels, count, layer.name, invert), mode,
                        float(factor) if mode == "scale" else 0.0, module=layer.module)


def check_patches(loaded: LoadedModel, patches: Sequence[Patch], name: str = "patches[{i}]") -> list[Patch]:
    """Patches no larger than the model input and overlapping it; errors name the field (``patches[i].size``,
    or ``name`` formatted with the index: ``patch.size`` for live mode's one patch)."""
    height, width = loaded.entry.input.height, loaded.entry.input.width
    for i, patch in enumerate(patches):
        field = name.format(i=i)
        if patch.size > max(height, width):
            raise ApiError(422, "patch_too_large", f"{field}.size: {patch.size} is larger than the "
                           f"{height}×{width} model input of {loaded.entry.id}.")
        top, left, bottom, right = patch.box(height, width)
        if bottom <= top:
            raise ApiError(422, "patch_outside", f"{field}.y: a patch of {patch.size} at y={patch.y} misses "
                           f"the {height}×{width} input.")
        if right <= left:
            raise ApiError(422, "patch_outside", f"{field}.x: a patch of {patch.size} at x={patch.x} misses "
                           f"the {height}×{width} input.")
    return list(patches)


def check_classes(loaded: LoadedModel, classes: Sequence[int] | None) -> list[int]:
    out = []
    for i, index in enumerate(classes or ()):
        loaded.class_index(index, f"classes[{i}]")
        out.append(int(index))
    return out


def check_same_input(loaded: LoadedModel, other: LoadedModel) -> None:
    a, b = loaded.entry.input, other.entry.input
    if (a.channels, a.height, a.width) != (b.channels, b.height, b.width):
        raise ApiError(422, "incompatible_inputs",
                       f"with_model: {other.entry.id} takes {b.channels}×{b.height}×{b.width} inputs and "
                       f"{loaded.entry.id} {a.channels}×{a.height}×{a.width}; layers can only be compared on "
                       "inputs of one size.")
