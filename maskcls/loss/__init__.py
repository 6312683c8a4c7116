"""Losses, by name: ce, focal, f1 (soft macro-F1), and sums such as ce+f1.

Every loss takes the model's logits and (B,18) soft class targets, so mixup/CutMix and label
smoothing work the same for the 18-way and the multi-head models: each head is trained on the
marginal of the 18-class target.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import MaskclsError
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


PER_HEAD_LOSSES = {"ce": soft_cross_entropy, "focal": soft_focal}
LOSS_NAMES = ("ce", "focal", "f1")


class MaskLoss:
    """Weighted sum of per-head losses (+ soft-F1 on the 18-class probabilities)."""

    def __init__(self, layout, name="ce", label_smoothing=0.0, focal_gamma=2.0, class_weights=None, head_weights=None, f1_weight=1.0):
        parts = name.split("+")
        unknown = [p for p in parts if p not in LOSS_NAMES]
        if unknown or not parts:
            raise MaskclsError(f"train.loss={name!r}: unknown loss {unknown[0]!r}; use ce, focal, f1 or a sum like ce+f1")
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
        for z, (head, _, kind) in zip(split_heads(logits, self.layout), self.layout):
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
