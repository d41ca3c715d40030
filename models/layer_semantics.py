"""What a layer really does when its module attributes do not say it: timm's two common cases.

* ``Conv2dSame`` (timm's TensorFlow-ported models, e.g. ``tf_efficientnet_lite0``) holds ``padding=0``
  and pads in ``forward`` the way TensorFlow's 'same' does: total = max((⌈n/s⌉ − 1)·s + k_eff − n, 0),
  the odd cell after (bottom/right) — exactly ``window_math``'s 'same'. :func:`conv_padding` says 'same'.
* ``BatchNormAct2d`` is a batch norm whose ``forward`` also applies its child ``act`` (ReLU6 in
  EfficientNet-Lite): the norm's output is the activation's *input*. :func:`fused_activation` returns
  that child (None when it is the identity), so a trace can show batch norm and activation as two steps.
"""

from __future__ import annotations

import sys
from typing import Any

from torch import nn


def _is_dynamic_same(module: nn.Module) -> bool:
    # A timm Conv2dSame exists only once timm's layers are imported: looked up, not imported. Importing timm
    # here cost a ResNet-18 or LeNet-5 view about 47,000 new objects and a second of CPU on first use, and
    # the garbage collections walking them stalled the event loop 110-170 ms under the class mix (issue 21).
    conv2d_same = getattr(sys.modules.get("timm.layers"), "Conv2dSame", None)
    if conv2d_same is None:
        return False
    return isinstance(module, conv2d_same)


def conv_padding(module: nn.Conv2d) -> Any:
    """The padding the convolution applies: 'same' for dynamic-same convs, else ``module.padding``."""
    return "same" if _is_dynamic_same(module) else module.padding


def fused_activation(module: nn.Module) -> nn.Module | None:
    """The activation a normalisation module applies inside its own forward, or None."""
    if not isinstance(module, nn.modules.batchnorm._BatchNorm):
        return None
    act = getattr(module, "act", None)
    if isinstance(act, nn.Module) and not isinstance(act, nn.Identity):
        return act
    return None
