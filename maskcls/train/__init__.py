"""Training: `train(cfg)` runs one person-split training and returns its summary."""
from .engine import train

__all__ = ["train"]
