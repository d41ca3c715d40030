"""The name → method table that drives the API and the page's method picker."""

from __future__ import annotations

from typing import Any

from server.errors import ApiError
from server.services.saliency.base import SaliencyMethod
from server.services.saliency.cams import EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM, XGradCAM
from server.services.saliency.gradients import (
    GuidedBackprop,
    GuidedGradCAM,
    IntegratedGradients,
    Occlusion,
    SmoothGrad,
    VanillaGradient,
)

METHODS: dict[str, type[SaliencyMethod]] = {
    cls.name: cls
    for cls in (
        GradCAM,
        GradCAMPlusPlus,
        XGradCAM,
        LayerCAM,
        ScoreCAM,
        EigenCAM,
        VanillaGradient,
        GuidedBackprop,
        GuidedGradCAM,
        SmoothGrad,
        IntegratedGradients,
        Occlusion,
    )
}
DEFAULT_METHOD = GradCAM.name


def get_method(name: str) -> SaliencyMethod:
    """A fresh instance of the method called ``name``; 422 ``unknown_method`` when there is none."""
    cls = METHODS.get(name)
    if cls is None:
        raise ApiError(
            422, "unknown_method", f"There is no saliency method {name!r}; choose one of {', '.join(METHODS)}."
        )
    return cls()


def describe_methods() -> list[dict[str, Any]]:
    """What the page's picker shows for each method."""
    return [
        {
            "name": cls.name,
            "title": cls.title,
            "family": cls.family,
            "uses_layer": cls.uses_layer,
            "display": cls.display,
            "cost": cls.cost,
            "summary": cls.summary,
        }
        for cls in METHODS.values()
    ]
