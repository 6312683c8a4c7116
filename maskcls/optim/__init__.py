"""Optimizers by name, with parameter groups: no weight decay on norms and biases, and a
lower learning rate for a pretrained backbone (and the fine-tuned face experts) than for the new head.

`create_optimizer(model, opt=..., lr=...)` takes keywords, as timm's factories do;
`optimizer_kwargs(train_cfg)` is the one adapter from a config to those keywords.
"""
from __future__ import annotations

import torch

OPTIMIZERS = {
    "sgd": lambda groups, lr, momentum: torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True),
    "adam": lambda groups, lr, momentum: torch.optim.Adam(groups, lr=lr),
    "adamw": lambda groups, lr, momentum: torch.optim.AdamW(groups, lr=lr),
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


def create_optimizer(model, opt: str = "adamw", lr: float = 1e-3, weight_decay: float = 0.01, momentum: float = 0.9,
                     backbone_lr_mult: float = 0.1, experts_lr_mult: float = 0.1) -> torch.optim.Optimizer:
    groups = param_groups(model, lr, weight_decay, backbone_lr_mult, experts_lr_mult)
    optimizer = OPTIMIZERS[opt](groups, lr, momentum)
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    return optimizer


def optimizer_kwargs(train_cfg) -> dict:
    """create_optimizer's keywords from a config.TrainConfig."""
    return {"opt": train_cfg.optimizer, "lr": train_cfg.lr, "weight_decay": train_cfg.weight_decay, "momentum": train_cfg.momentum,
            "backbone_lr_mult": train_cfg.backbone_lr_mult, "experts_lr_mult": train_cfg.experts_lr_mult}
