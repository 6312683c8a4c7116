"""Classification heads and their decoding to the 18 competition classes.

A head layout is a list of (name, outputs, kind). The model emits one logits tensor with the
heads side by side, so it exports to ONNX as a single output; `class_probs` turns it into the
18-class probabilities every consumer (metrics, predict, ensembles) uses.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MaskclsError
from ..labels import NUM_CLASSES

HEAD_LAYOUTS = {
    "single": [("class", NUM_CLASSES, "softmax")],
    "multi": [("mask", 3, "softmax"), ("gender", 2, "softmax"), ("age", 3, "softmax")],
}


def head_layout(head: str, age_ordinal: bool = False) -> list[tuple[str, int, str]]:
    if head not in HEAD_LAYOUTS:
        raise MaskclsError(f"model.head={head!r}: choose one of {', '.join(HEAD_LAYOUTS)}")
    layout = list(HEAD_LAYOUTS[head])
    if age_ordinal:
        if head != "multi":
            raise MaskclsError("model.age_ordinal=true needs model.head=multi (the age head is what becomes ordinal)")
        # Two "age > boundary" logits: P(age >= 30), P(age >= 60); ordered by construction of the targets.
        layout[2] = ("age", 2, "ordinal")
    return layout


def split_heads(logits: torch.Tensor, layout) -> list[torch.Tensor]:
    return list(torch.split(logits, [n for _, n, _ in layout], dim=1))


def ordinal_to_probs(logits: torch.Tensor) -> torch.Tensor:
    """(B,2) 'age above boundary k' logits -> (B,3) group probabilities."""
    above = torch.sigmoid(logits)
    above_30, above_60 = above[:, 0], torch.minimum(above[:, 1], above[:, 0])  # keep P(>=60) <= P(>=30)
    return torch.stack([1 - above_30, above_30 - above_60, above_60], dim=1)


def head_probs(logits: torch.Tensor, layout) -> list[torch.Tensor]:
    return [
        ordinal_to_probs(z) if kind == "ordinal" else F.softmax(z.float(), dim=1)
        for z, (_, _, kind) in zip(split_heads(logits, layout), layout, strict=True)
    ]


def class_probs(logits: torch.Tensor, layout) -> torch.Tensor:
    """18-class probabilities; multi-head outputs are combined as independent factors."""
    probs = head_probs(logits.float(), layout)
    if len(probs) == 1:
        return probs[0]
    mask, gender, age = probs
    # -1 rather than len(mask): an exported graph keeps a free batch size.
    return (mask[:, :, None, None] * gender[:, None, :, None] * age[:, None, None, :]).reshape(-1, NUM_CLASSES)


def marginal_targets(target18: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-head soft targets from (B,18) soft class targets (mixup/CutMix-ready)."""
    cube = target18.reshape(-1, 3, 2, 3)
    return {"class": target18, "mask": cube.sum((2, 3)), "gender": cube.sum((1, 3)), "age": cube.sum((1, 2))}


AGE_YEAR_CLASSES = tuple(range(81))  # one class per year, 0..80, as the face experts' age network has


def age_group_log_masks(age_class_years, cuts) -> torch.Tensor:
    """(3, n_classes): 0 where an age class belongs to the group, -inf elsewhere."""
    group = torch.bucketize(torch.as_tensor(age_class_years, dtype=torch.float32), torch.tensor(cuts, dtype=torch.float32), right=True)
    masks = torch.full((3, len(group)), float("-inf"))
    for g in range(3):
        masks[g, group == g] = 0.0
    return masks


def age_group_log_probs(year_logits: torch.Tensor, age_groups: torch.Tensor) -> torch.Tensor:
    """(B, 3) age-group log-probabilities from one-year age-class logits and `age_group_log_masks`."""
    return torch.logsumexp(year_logits.log_softmax(1)[:, None, :] + age_groups, dim=2)


class AgeYearsHead(nn.Module):
    """One-year age classes on the backbone's features, for exact-age training (`model.age_years`).

    Their distribution, summed into the three age groups (log-probabilities), is added to the age
    head's logits, so what the exact ages teach reaches the 18-class prediction: a 29-year-old and
    a 31-year-old are near neighbours here, not two unrelated classes.
    """

    def __init__(self, num_features: int, age_cuts, class_years=AGE_YEAR_CLASSES):
        super().__init__()
        self.linear = nn.Linear(num_features, len(class_years))
        self.register_buffer("age_class_years", torch.tensor(class_years, dtype=torch.float32), persistent=False)
        self.register_buffer("age_groups", age_group_log_masks(class_years, age_cuts), persistent=False)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(year logits (B, n_classes), age-group log-probabilities (B, 3))."""
        year_logits = self.linear(features).float()
        return year_logits, age_group_log_probs(year_logits, self.age_groups)
