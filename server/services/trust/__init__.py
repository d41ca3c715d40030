"""Can we trust this map? Sanity checks and faithfulness curves for the saliency methods (issue 23)."""

from server.services.trust.service import TrustChecks

__all__ = ["TrustChecks"]
