"""Training scripts for the bundled models: ``train_model(model_id, ...)`` writes weights + metrics."""

from models.training.train import TRAIN_CONFIGS, TrainConfig, train_model

__all__ = ["TRAIN_CONFIGS", "TrainConfig", "train_model"]
