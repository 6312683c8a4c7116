"""LR schedulers by name: step, cosine (with linear warmup), plateau (on validation macro-F1).

`step_per_batch` says whether the loop steps the scheduler after each optimizer step (cosine)
or once per epoch (step, plateau).
"""
from __future__ import annotations

import math

import torch

from ..errors import MaskclsError


def cosine_with_warmup(optimizer, total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


SCHEDULERS = {
    "cosine": lambda opt, t, steps_per_epoch: cosine_with_warmup(
        opt, t["epochs"] * steps_per_epoch, int(t["warmup_epochs"] * steps_per_epoch)
    ),
    "step": lambda opt, t, _: torch.optim.lr_scheduler.StepLR(opt, t["step_size"], t["step_gamma"]),
    "plateau": lambda opt, t, _: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.3, patience=t["plateau_patience"]),
    "none": lambda opt, t, _: torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0),
}
STEP_PER_BATCH = {"cosine": True, "step": False, "plateau": False, "none": False}


def create_scheduler(optimizer, train_cfg: dict, steps_per_epoch: int):
    name = train_cfg["scheduler"]
    if name not in SCHEDULERS:
        raise MaskclsError(f"train.scheduler={name!r}: choose one of {', '.join(SCHEDULERS)}")
    return SCHEDULERS[name](optimizer, train_cfg, steps_per_epoch), STEP_PER_BATCH[name]
