"""Training: `train(cfg)` runs one person-split training and returns its summary; `run_cv` runs K folds."""
from .cv import run_cv
from .engine import train

__all__ = ["train", "run_cv"]
