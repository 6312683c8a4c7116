"""Hyper-parameter search with Optuna: search spaces over config keys, studies of training runs, reports."""
from .report import write_report
from .space import SearchSpace, load_space
from .study import tune

__all__ = ["SearchSpace", "load_space", "tune", "write_report"]
