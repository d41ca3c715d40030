"""The experiments' answers as the API shapes them (JSON bodies, pictures, headers), from service results."""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import quote, urlencode

import numpy as np
import torch
from PIL import Image

from server.services.experiments.ablation import AblationOutcome, AblationSpec
from server.services.experiments.adversarial import AttackSpec
from server.services.experiments.layer_split import LayerSplit
from server.services.experiments.occlusion_probe import Patch, occlusion_map
from server.services.runtime.inputs import ModelInputs, input_picture
from server.services.runtime.model_runtime import LoadedModel
from server.services.runtime.outputs import predictions_from_logits
from server.services.saliency.overlay import overlay_png

TOP = 5


def _label(loaded: LoadedModel, index: int) -> str:
    labels = loaded.entry.categories
    return labels[index] if index < len(labels) else str(index)


def _url(loaded: LoadedModel, image_id: str, suffix: str, query: dict[str, Any]) -> str:
    query = {**query, "weights": loaded.variant}
    return (f"/api/models/{quote(loaded.entry.id, safe='')}/images/{quote(image_id, safe='')}/{suffix}?"
            f"{urlencode(query)}")


def class_changes(loaded: LoadedModel, before: torch.Tensor, after: torch.Tensor) -> list[dict[str, Any]]:
    """Each class in either top-5: its probability before and after, and the change (after − before)."""
    p_before, p_after = torch.softmax(before.double(), -1), torch.softmax(after.double(), -1)
    k = min(TOP, p_before.numel())
    classes = list(dict.fromkeys([*torch.topk(p_before, k).indices.tolist(), *torch.topk(p_after, k).indices.tolist()]))
    rows = [{"index": int(c), "label": _label(loaded, int(c)), "before": float(p_before[c]), "after": float(p_after[c]),
             "change": float(p_after[c] - p_before[c])} for c in classes]
    return sorted(rows, key=lambda r: -r["before"])


def ablation(loaded: LoadedModel, image_id: str, spec: AblationSpec, outcome: AblationOutcome,
             baseline: torch.Tensor, split: LayerSplit) -> dict[str, Any]:
    query = {"layer": spec.layer, "channels": ",".join(map(str, spec.channels)), "mode": spec.mode}
    if spec.mode == "scale":
        query["factor"] = spec.factor
    return {
        "layer": spec.layer,
        "channels": list(spec.channels),
        "mode": spec.mode,
        "factor": spec.factor if spec.mode == "scale" else None,
        "predictions": predictions_from_logits(loaded, outcome.logits, TOP),
        "baseline": predictions_from_logits(loaded, baseline, TOP),
        "changes": class_changes(loaded, baseline, outcome.logits),
        "layers": [{"name": name, "relative_l2": value} for name, value in outcome.relative_l2],
        "recomputed_from": "layer" if split.graph is not None else "input",
        "restart_note": "" if split.graph is not None else f"the forward could not be traced ({split.reason}); "
                                                           "each ablation runs the whole pass",
        "gradcam": {
            "layer": loaded.entry.target_layer,
            "png": _url(loaded, image_id, "ablation/gradcam.png", query),
            "npy": _url(loaded, image_id, "ablation/gradcam.npy", query),
            "baseline_png": _url(loaded, image_id, "saliency.png", {"method": "gradcam"}),
        },
        "weights_used": loaded.variant,
    }


def cam_headers(cam: Any) -> dict[str, str]:
    return {"X-ConvScope-Range": f"{cam.low!r},{cam.high!r}", "X-ConvScope-Target": str(cam.target)}


def overlay(loaded: LoadedModel, inputs: ModelInputs, image_id: str, values: np.ndarray, colormap: str,
            opacity: float) -> bytes:
    picture = input_picture(loaded, inputs.tensor(loaded, image_id))
    return overlay_png(np.asarray(values, dtype=np.float32), picture, colormap, opacity)


def _classes(loaded: LoadedModel, probs: torch.Tensor, classes: list[int]) -> list[dict[str, Any]]:
    return [{"index": c, "label": _label(loaded, c), "probability": float(probs[c])} for c in classes]


def probe(loaded: LoadedModel, patches: list[Patch], result: Any, classes: list[int]) -> dict[str, Any]:
    height, width = loaded.entry.input.height, loaded.entry.input.width
    clean = torch.softmax(result.clean.double(), -1)
    out = []
    for patch, logits in zip(patches, result.logits):
        top, left, bottom, right = patch.box(height, width)
        row: dict[str, Any] = {
            "predictions": predictions_from_logits(loaded, logits, TOP),
            "patch": {"y": top, "x": left, "height": bottom - top, "width": right - left, "fill": patch.fill},
        }
        if classes:
            row["classes"] = _classes(loaded, torch.softmax(logits.double(), -1), classes)
        out.append(row)
    return {
        "results": out,
        "clean": predictions_from_logits(loaded, result.clean, TOP),
        "clean_classes": _classes(loaded, clean, classes),
        "input": {"height": height, "width": width},
        "weights_used": loaded.variant,
    }


def probe_map(loaded: LoadedModel, patches: list[Patch], result: Any, target: int | None) -> tuple[np.ndarray, dict[str, str]]:
    """(H×W in [0, 1]: the mean drop of the class's probability, scaled by its largest value; the headers)."""
    clean = torch.softmax(result.clean.double(), -1)
    cls = int(clean.argmax()) if target is None else target
    drops = clean[cls] - torch.softmax(result.logits.double(), -1)[:, cls]
    height, width = loaded.entry.input.height, loaded.entry.input.width
    mean_drop, counts = occlusion_map(patches, drops, height, width)
    high = float(mean_drop.clamp(min=0).max())
    values = (mean_drop.clamp(min=0) / high if high > 0 else torch.zeros_like(mean_drop)).numpy().astype(np.float32)
    covered = float((counts > 0).double().mean())
    return values, {"X-ConvScope-Range": f"0,{high!r}", "X-ConvScope-Target": str(cls),
                    "X-ConvScope-Coverage": f"{covered:.4f}"}


def attack(loaded: LoadedModel, image_id: str, spec: AttackSpec, result: Any, known: bool,
           min_flip: int | None) -> dict[str, Any]:
    query: dict[str, Any] = {"attack": spec.attack, "epsilon": spec.epsilon}
    if spec.attack == "pgd":
        query.update(steps=spec.steps, step_size=spec.step_size)
    if spec.target is not None:
        query["target"] = spec.target
    delta = (result.perturbed - result.pixels) * 255.0
    return {
        "attack": spec.attack,
        "epsilon": spec.epsilon,
        "steps": spec.steps if spec.attack == "pgd" else 1,
        "step_size": spec.step_size if spec.attack == "pgd" else spec.epsilon,
        "target": spec.target,
        "before": predictions_from_logits(loaded, result.before, TOP),
        "after": predictions_from_logits(loaded, result.after, TOP),
        "changes": class_changes(loaded, result.before, result.after),
        "flipped": int(result.after.argmax()) != int(result.before.argmax()),
        "min_flip_epsilon": min_flip,
        "min_flip_known": known,
        "perturbation": {"max_abs": float(delta.abs().max()), "mean_abs": float(delta.abs().mean()),
                         "unit": "1/255 of the pixel range"},
        "layers": [{"name": name, "relative_l2": value} for name, value in result.layers],
        "urls": {
            "image": _url(loaded, image_id, "adversarial.png", query),
            "perturbation": _url(loaded, image_id, "adversarial/perturbation.png", query),
            "npy": _url(loaded, image_id, "adversarial/perturbation.npy", query),
            "min_flip": _url(loaded, image_id, "adversarial/min-flip.json", query),
        },
        "weights_used": loaded.variant,
    }


def _png(array: np.ndarray) -> bytes:
    """C×H×W uint8 (1 or 3 channels) as PNG."""
    picture = Image.fromarray(array[0], mode="L") if array.shape[0] == 1 else Image.fromarray(array[:3].transpose(1, 2, 0))
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return buf.getvalue()


def pixels_png(pixels: torch.Tensor) -> bytes:
    return _png((pixels.clamp(0, 1) * 255.0).round().to(torch.uint8).numpy())


def perturbation_png(result: Any, spec: AttackSpec) -> tuple[bytes, float]:
    """The perturbation with ±ε (at least ±1/255) mapped to 0…255, grey 128 for none; the gain."""
    bound = max(spec.epsilon, 1) / 255.0
    gain = 0.5 / bound
    delta = (result.perturbed - result.pixels) * gain + 0.5
    return pixels_png(delta), gain
