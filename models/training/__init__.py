"""Training: one config (:mod:`config`), one loop (:mod:`loop`), used by ``convscope train`` (:mod:`train`)
and by the Train view's worker process (``server.services.training``)."""

from models.training.config import BUNDLED_RECIPES, RunConfig, recipe
from models.training.train import train_model

__all__ = ["BUNDLED_RECIPES", "RunConfig", "recipe", "train_model"]
