"""Reading a user's checkpoint file safely, and saying in one sentence what is wrong with it.

Only state_dicts are accepted, and only through ``torch.load(weights_only=True)``, which refuses to run
code. The two things people most often give instead are recognised and refused with a reason:

* a **TorchScript archive** (``torch.jit.save``): a compiled program, not a module tree — every ConvScope
  view hooks the model's own layers, which a scripted module does not expose the same way;
* a **pickle of a whole module** (``torch.save(model)``): loading it means unpickling arbitrary classes,
  which runs code from the file.

The remedy is the same for both: save ``model.state_dict()`` and name the builder in the models file.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import torch
from torch import nn

REMEDY = ("give a state_dict instead (torch.save(model.state_dict(), PATH)) and name the architecture's builder "
          "(torchvision, timm or factory) in the models file")
NESTED_KEYS = ("state_dict", "model_state_dict", "model")  # common training-checkpoint layouts
SHOW = 3  # how many mismatched keys a message lists


class CheckpointError(ValueError):
    """The file cannot be used as this model's weights; the message is a sentence for a person."""


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any("/code/" in n or n.endswith("constants.pkl") for n in names)


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of the state_dict in ``path``; :class:`CheckpointError` naming the cause otherwise."""
    if not path.is_file():
        raise CheckpointError(f"the weights file {path} does not exist")
    if _is_torchscript(path):
        raise CheckpointError(
            f"{path.name} is a TorchScript archive: ConvScope needs the model's own layers for its forward hooks "
            f"(feature maps, Grad-CAM, step-through), which a compiled script does not give; {REMEDY}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc)
        found = _GLOBAL.search(text)
        if found or "Unsupported global" in text or "weights_only" in text.lower():
            what = f" (it names the class {found.group(1)})" if found else ""
            raise CheckpointError(
                f"{path.name} is a pickle of Python objects{what}, not a plain state_dict: loading it would run "
                f"code from the file, so it is refused; {REMEDY}") from None
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise CheckpointError(f"{path.name} could not be read as a PyTorch checkpoint ({first})") from None
    if isinstance(state, dict):
        for key in NESTED_KEYS:
            inner = state.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                state = inner
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path.name} holds no state_dict of tensors; {REMEDY}")
    if all(k.startswith("module.") for k in state):  # saved from DataParallel / DDP
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def mismatch(state: dict[str, torch.Tensor], model: nn.Module) -> str | None:
    """Why ``state`` does not fit ``model`` exactly (missing, unexpected, wrong-shaped keys), or None."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shape mismatches (file vs model)", shapes)):
        if items:
            more = f" and {len(items) - SHOW} more" if len(items) > SHOW else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:SHOW])}{more}")
    return "; ".join(parts) or None
