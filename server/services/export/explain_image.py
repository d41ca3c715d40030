"""``convscope explain``: the top classes of one image and a saliency overlay per class, with no server.

For scripts and notebooks: the same model loading, preprocessing and saliency methods the server uses,
written to a folder as ``<rank>-<label>.png`` overlays (the map blended over what the model sees) and one
``explain.json`` with the numbers (probabilities, logits, the raw maps' ranges, file names).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from server.services.runtime.inputs import input_picture
from server.services.runtime.model_runtime import LoadedModel
from server.services.saliency.layer_choice import saliency_layer
from server.services.saliency.methods import get_method
from server.services.saliency.overlay import overlay_png


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:40] or "class"


def explain_image(loaded: LoadedModel, image: Any, out_dir: Path, method: str = "gradcam", layer: str | None = None,
                  top: int = 5, opacity: float = 0.5, colormap: str = "viridis") -> dict[str, Any]:
    """Explain ``image`` (a PIL image) on ``loaded``; writes the overlays and explain.json into ``out_dir``."""
    saliency = get_method(method)
    # an unknown layer is a clear error before any work
    layer_name = saliency_layer(loaded, layer).name if saliency.uses_layer else None
    tensor = loaded.preprocess(image)
    x = tensor.unsqueeze(0).to(loaded.device)
    with torch.no_grad():
        logits = loaded.module(x)[0].float().cpu()
    probabilities = torch.softmax(logits.double(), dim=0)
    top = max(1, min(top, logits.numel()))
    order = torch.argsort(probabilities, descending=True)[:top].tolist()
    explanation = saliency.explain(loaded, x, layer_name, order)
    picture = input_picture(loaded, tensor)
    out_dir.mkdir(parents=True, exist_ok=True)
    classes = []
    for rank, (index, scaled) in enumerate(zip(order, explanation.maps), start=1):
        label = loaded.entry.categories[index] if index < len(loaded.entry.categories) else str(index)
        name = f"{rank}-{_slug(label)}.png"
        values = scaled.values.detach().cpu().numpy()
        (out_dir / name).write_bytes(overlay_png(values, picture, colormap, opacity))
        peak = divmod(int(values.argmax()), values.shape[1])
        classes.append({"rank": rank, "index": index, "label": label, "probability": float(probabilities[index]),
                        "logit": float(logits[index]), "overlay": name, "peak": {"y": peak[0], "x": peak[1]}})
    report = {
        "model": loaded.entry.id, "weights": loaded.variant, "method": saliency.name, "layer": layer_name,
        "input": list(tensor.shape), "classes": classes,
    }
    (out_dir / "explain.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
