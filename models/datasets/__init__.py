"""Datasets used to train and demonstrate the bundled models."""
