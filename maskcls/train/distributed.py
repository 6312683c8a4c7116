"""The seams distributed training plugs into, in one place (as torchvision's references keep
them in utils.py): who writes files, and how each process's validation rows become the whole
holdout. In a single process they are the identity."""
from __future__ import annotations

import numpy as np
import torch.distributed as dist


def is_main_process() -> bool:
    """Only one process writes checkpoints, metrics and logs."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def gather_rows(rows: np.ndarray) -> np.ndarray:
    """Every process's rows, concatenated in rank order, so macro-F1 is computed over the whole holdout once."""
    if not (dist.is_available() and dist.is_initialized()):
        return rows
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, rows)
    return np.concatenate(parts)
