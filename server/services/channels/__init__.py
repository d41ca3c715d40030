"""What a channel looks for: its top dataset examples and its feature visualisation (background jobs)."""

from server.services.channels.examples import ChannelExamples
from server.services.channels.feature_vis import FeatureVisualisations

__all__ = ["ChannelExamples", "FeatureVisualisations"]
