"""The feature-map view ("Layers" tab): a layer's activations, its atlas and overview strip, learned filters."""

from server.services.feature_maps.activations import ActivationStore
from server.services.feature_maps.layer_overview import LayerOverviews
from server.services.feature_maps.service import FeatureMaps

__all__ = ["ActivationStore", "FeatureMaps", "LayerOverviews"]
