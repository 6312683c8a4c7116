"""Losses, by name: ce, focal, f1 (soft macro-F1), and sums such as ce+f1.

Every loss takes the model's logits and (B,18) soft class targets, so mixup/CutMix and label
smoothing work the same for the 18-way and the multi-head models: each head is trained on the
marginal of the 18-class target.

`create_loss(layout, loss=..., label_smoothing=...)` takes keywords, as timm's factories do;
`loss_kwargs(train_cfg)` is the one adapter from a config to those keywords.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import MaskclsError
from ..labels import NUM_CLASSES
from ..models.heads import class_probs, marginal_targets, split_heads


def soft_cross_entropy(logits, target, class_weights=None, label_smoothing=0.0):
    if label_smoothing:
        target = target * (1 - label_smoothing) + label_smoothing / target.shape[1]
    log_probs = F.log_softmax(logits.float(), dim=1)
    weighted = target if class_weights is None else target * class_weights
    return -(weighted * log_probs).sum(1).mean()


def soft_focal(logits, target, class_weights=None, gamma=2.0, label_smoothing=0.0):
    if label_smoothing:
        target = target * (1 - label_smoothing) + label_smoothing / target.shape[1]
    log_probs = F.log_softmax(logits.float(), dim=1)
    focus = (1 - log_probs.exp()) ** gamma
    weighted = target if class_weights is None else target * class_weights
    return -(weighted * focus * log_probs).sum(1).mean()


def ordinal_bce(logits, age_target, class_weights=None):
    """Age as two 'above boundary' decisions; soft targets P(>=30), P(>=60) from the age marginal."""
    above = torch.stack([age_target[:, 1] + age_target[:, 2], age_target[:, 2]], dim=1)
    per_sample = F.binary_cross_entropy_with_logits(logits.float(), above, reduction="none").sum(1)
    if class_weights is not None:
        per_sample = per_sample * (age_target * class_weights).sum(1)
    return per_sample.mean()


def soft_macro_f1_loss(probs18, target18, eps=1e-7):
    """1 - soft macro-F1 over the batch (differentiable counts of TP/FP/FN).

    Classes neither in the batch's targets nor predicted at all have no F1 to learn from, and
    are left out of the mean rather than counted as zeros.
    """
    tp = (probs18 * target18).sum(0)
    fp = (probs18 * (1 - target18)).sum(0)
    fn = ((1 - probs18) * target18).sum(0)
    denominator = 2 * tp + fp + fn
    seen = denominator > eps
    f1 = 2 * tp[seen] / denominator[seen]
    return 1 - f1.mean()


def age_year_targets(ages: torch.Tensor, class_years: torch.Tensor, sigma: float, cap: int) -> torch.Tensor:
    """(B, n_classes) soft targets over one-year age classes: a Gaussian of `sigma` years around
    each exact age (label-distribution learning, which suits ages better than hard classes).
    Ages at or above `cap` are censored (the competition caps ages at 60: "60" means 60 or
    more), so their rows are zero and only the age-group head learns from them."""
    ages = ages.float()[:, None]
    target = torch.exp(-0.5 * ((class_years[None, :] - ages) / sigma) ** 2)
    target = target / target.sum(1, keepdim=True)
    return target * (ages < cap)


def age_years_loss(age_year_logits: torch.Tensor, year_targets: torch.Tensor) -> torch.Tensor:
    """Soft cross-entropy over the age classes; zero target rows (censored ages) add nothing."""
    return -(year_targets * F.log_softmax(age_year_logits.float(), dim=1)).sum(1).mean()


LOSS_NAMES = ("ce", "focal", "f1")


def check_loss_name(name: str) -> list[str]:
    """The parts of a loss name such as ce+f1; a one-line error for an unknown part."""
    parts = name.split("+")
    unknown = [p for p in parts if p not in LOSS_NAMES]
    if unknown:
        raise MaskclsError(f"train.loss={name!r}: unknown loss {unknown[0]!r}; use ce, focal, f1 or a sum like ce+f1")
    return parts


class MaskLoss:
    """Weighted sum of per-head losses (+ soft-F1 on the 18-class probabilities)."""

    def __init__(self, layout, name="ce", label_smoothing=0.0, focal_gamma=2.0, class_weights=None, head_weights=None, f1_weight=1.0):
        parts = check_loss_name(name)
        self.layout = layout
        self.per_head = [p for p in parts if p != "f1"]
        self.use_f1 = "f1" in parts
        self.label_smoothing = label_smoothing
        self.focal_gamma = focal_gamma
        self.class_weights = class_weights or {}
        self.head_weights = {n: float((head_weights or {}).get(n, 1.0)) for n, _, _ in layout}
        self.f1_weight = f1_weight

    def __call__(self, logits, target18):
        targets = marginal_targets(target18)
        total = logits.new_zeros((), dtype=torch.float32)
        for z, (head, _, kind) in zip(split_heads(logits, self.layout), self.layout, strict=True):
            weights = self.class_weights.get(head)
            for loss_name in self.per_head:
                if kind == "ordinal":
                    part = ordinal_bce(z, targets[head], weights)
                elif loss_name == "focal":
                    part = soft_focal(z, targets[head], weights, self.focal_gamma, self.label_smoothing)
                else:
                    part = soft_cross_entropy(z, targets[head], weights, self.label_smoothing)
                total = total + self.head_weights[head] * part
        if self.use_f1:
            total = total + self.f1_weight * soft_macro_f1_loss(class_probs(logits, self.layout), target18)
        return total


def balanced_class_weights(labels: np.ndarray, layout) -> dict:
    """Per-head inverse class frequency, normalised to mean 1 (train.class_weights=balanced)."""
    onehot = F.one_hot(torch.from_numpy(np.array(labels, dtype=np.int64)), NUM_CLASSES).float()
    heads = {name for name, _, _ in layout}
    weights = {}
    for head, counts in marginal_targets(onehot).items():
        if head in heads:
            counts = counts.sum(0).clamp(min=1)
            w = counts.sum() / counts
            weights[head] = w / w.mean()
    return weights


class TrainingLoss:
    """What a training step minimises: MaskLoss on the 18-class target, plus, with exact ages,
    the one-year age-class loss. Targets are (B, 18) soft classes, followed by the year targets
    when exact ages are trained, so mixup and CutMix mix both alike."""

    def __init__(self, criterion: MaskLoss, age_years_weight: float = 0.0, age_years_sigma: float = 3.0, age_cap: int = 60,
                 age_class_years: torch.Tensor | None = None):
        self.criterion = criterion
        self.age_years_weight = age_years_weight
        self.age_years_sigma = age_years_sigma
        self.age_cap = age_cap
        self.age_class_years = age_class_years

    @property
    def with_age_years(self) -> bool:
        return bool(self.age_years_weight)

    def targets(self, y: torch.Tensor) -> torch.Tensor:
        """Soft targets from a batch of labels: (B,) classes, or (B, 2) rows of (class, age in years)."""
        target = F.one_hot(y[:, 0] if y.ndim == 2 else y, NUM_CLASSES).float()
        if self.with_age_years:
            years = age_year_targets(y[:, 1], self.age_class_years, self.age_years_sigma, self.age_cap)
            target = torch.cat([target, years], 1)
        return target

    def __call__(self, outputs, target: torch.Tensor) -> torch.Tensor:
        if not self.with_age_years:
            return self.criterion(outputs.float(), target[:, :NUM_CLASSES])
        logits, age_year_logits = outputs
        return (self.criterion(logits.float(), target[:, :NUM_CLASSES])
                + self.age_years_weight * age_years_loss(age_year_logits, target[:, NUM_CLASSES:]))


def create_loss(layout, loss: str = "ce", label_smoothing: float = 0.0, focal_gamma: float = 2.0, class_weights: dict | None = None,
                head_weights: dict | None = None, f1_weight: float = 1.0, age_years_weight: float = 0.0, age_years_sigma: float = 3.0,
                age_cap: int = 60, age_class_years: torch.Tensor | None = None) -> TrainingLoss:
    criterion = MaskLoss(layout, loss, label_smoothing, focal_gamma, class_weights, head_weights, f1_weight)
    return TrainingLoss(criterion, age_years_weight, age_years_sigma, age_cap, age_class_years)


def loss_kwargs(train_cfg) -> dict:
    """create_loss's keywords from a config.TrainConfig (class weights and age classes come from the data and model)."""
    return {"loss": train_cfg.loss, "label_smoothing": train_cfg.label_smoothing, "focal_gamma": train_cfg.focal_gamma,
            "head_weights": train_cfg.head_weights, "f1_weight": train_cfg.f1_weight,
            "age_years_weight": train_cfg.age_years_weight, "age_years_sigma": train_cfg.age_years_sigma}
