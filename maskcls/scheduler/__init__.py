"""LR schedulers by name: step, cosine (with linear warmup), plateau (on validation macro-F1).

`create_scheduler(optimizer, sched=..., num_epochs=..., steps_per_epoch=...)` takes keywords, as
timm's `create_scheduler_v2` does, and returns the scheduler and `step_per_batch`: whether the loop
steps it after each optimizer step (cosine) or once per epoch (step, plateau).
`scheduler_kwargs(train_cfg, ...)` is the one adapter from a config to those keywords.
"""
from __future__ import annotations

import math

import torch


def cosine_with_warmup(optimizer, total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _cosine(optimizer, num_epochs, steps_per_epoch, warmup_epochs, **_):
    return cosine_with_warmup(optimizer, num_epochs * steps_per_epoch, int(warmup_epochs * steps_per_epoch))


def _step(optimizer, step_size, step_gamma, **_):
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size, step_gamma)


def _plateau(optimizer, plateau_patience, **_):
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.3, patience=plateau_patience)


def _constant(optimizer, **_):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


# name -> (factory, steps after every optimizer step rather than once per epoch)
SCHEDULERS = {"cosine": (_cosine, True), "step": (_step, False), "plateau": (_plateau, False), "none": (_constant, False)}


def create_scheduler(optimizer, sched: str = "cosine", num_epochs: int = 1, steps_per_epoch: int = 1, warmup_epochs: float = 0.0,
                     step_size: int = 2, step_gamma: float = 0.1, plateau_patience: int = 1):
    factory, step_per_batch = SCHEDULERS[sched]
    scheduler = factory(optimizer, num_epochs=num_epochs, steps_per_epoch=steps_per_epoch, warmup_epochs=warmup_epochs,
                        step_size=step_size, step_gamma=step_gamma, plateau_patience=plateau_patience)
    return scheduler, step_per_batch


def scheduler_kwargs(train_cfg, num_epochs: int, steps_per_epoch: int) -> dict:
    """create_scheduler's keywords from a config.TrainConfig and the loop's epoch and step counts."""
    return {"sched": train_cfg.scheduler, "num_epochs": num_epochs, "steps_per_epoch": steps_per_epoch,
            "warmup_epochs": train_cfg.warmup_epochs, "step_size": train_cfg.step_size, "step_gamma": train_cfg.step_gamma,
            "plateau_patience": train_cfg.plateau_patience}
