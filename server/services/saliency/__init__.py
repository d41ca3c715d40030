"""Saliency maps: the CAM family and gradient methods through one pipeline (see base.py).

``methods.METHODS`` is the name → method table; ``topk`` gives predictions plus the top-k maps in one
pass; ``service`` adds request keys, a bounded result cache and progress for the HTTP layer.
"""

from server.services.saliency.base import Explanation, SaliencyMethod, TopK
from server.services.saliency.methods import METHODS, describe_methods, get_method

__all__ = ["METHODS", "Explanation", "SaliencyMethod", "TopK", "describe_methods", "get_method"]
