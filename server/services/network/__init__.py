"""The network view: one column per layer for one image, and a dense unit's contributions."""

from server.services.network.overview import NetworkOverviews

__all__ = ["NetworkOverviews"]
