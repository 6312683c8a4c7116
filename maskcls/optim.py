"""Optimizers by name, with parameter groups: no weight decay on norms and biases, and a
lower learning rate for a pretrained backbone (and the fine-tuned face experts) than for the new head."""
from __future__ import annotations

import torch

from .errors import MaskclsError

OPTIMIZERS = {
    "sgd": lambda groups, t: torch.optim.SGD(groups, lr=t["lr"], momentum=t["momentum"], nesterov=True),
    "adam": lambda groups, t: torch.optim.Adam(groups, lr=t["lr"]),
    "adamw": lambda groups, t: torch.optim.AdamW(groups, lr=t["lr"]),
}


def param_groups(model, lr: float, weight_decay: float, backbone_lr_mult: float, experts_lr_mult: float = 1.0) -> list[dict]:
    """Groups by (part, decay): the backbone and the fine-tuned face experts get their own LR multipliers."""
    multipliers = {"backbone": backbone_lr_mult, "experts": experts_lr_mult}
    groups = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        top_level = name.split(".")[0]
        part = top_level if top_level in multipliers else "head"
        no_decay = param.ndim <= 1  # biases and norm scales
        key = (part, no_decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "lr": lr * multipliers.get(part, 1.0),
                "weight_decay": 0.0 if no_decay else weight_decay,
                "name": f"{part}{'/no_decay' if no_decay else ''}",
            }
        groups[key]["params"].append(param)
    return list(groups.values())


def create_optimizer(model, train_cfg: dict):
    name = train_cfg["optimizer"]
    if name not in OPTIMIZERS:
        raise MaskclsError(f"train.optimizer={name!r}: choose one of {', '.join(OPTIMIZERS)}")
    groups = param_groups(model, train_cfg["lr"], train_cfg["weight_decay"], train_cfg["backbone_lr_mult"],
                          train_cfg["experts_lr_mult"])
    optimizer = OPTIMIZERS[name](groups, train_cfg)
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    return optimizer
