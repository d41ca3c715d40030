"""Offline export for the CLI (``convscope explain``): predictions and saliency overlays written to a folder."""
