"""Classification heads and their decoding to the 18 competition classes.

A head layout is a list of (name, outputs, kind). The model emits one logits tensor with the
heads side by side, so it exports to ONNX as a single output; `class_probs` turns it into the
18-class probabilities every consumer (metrics, predict, ensembles) uses.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import MaskclsError

HEAD_LAYOUTS = {
    "single": [("class", 18, "softmax")],
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
    return [ordinal_to_probs(z) if kind == "ordinal" else F.softmax(z.float(), dim=1) for z, (_, _, kind) in zip(split_heads(logits, layout), layout)]


def class_probs(logits: torch.Tensor, layout) -> torch.Tensor:
    """18-class probabilities; multi-head outputs are combined as independent factors."""
    probs = head_probs(logits.float(), layout)
    if len(probs) == 1:
        return probs[0]
    mask, gender, age = probs
    return (mask[:, :, None, None] * gender[:, None, :, None] * age[:, None, None, :]).reshape(len(mask), 18)


def marginal_targets(target18: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-head soft targets from (B,18) soft class targets (mixup/CutMix-ready)."""
    cube = target18.reshape(-1, 3, 2, 3)
    return {"class": target18, "mask": cube.sum((2, 3)), "gender": cube.sum((1, 3)), "age": cube.sum((1, 2))}
