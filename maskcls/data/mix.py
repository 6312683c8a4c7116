"""Mixup, CutMix and vertical CutMix on (B,18) soft targets.

Vertical CutMix pastes a full-height strip from another photo: the left or right part of
another face, as in the original competition's winning solution, so both halves keep a whole
mask state.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import MaskclsError

MIX_MODES = ("none", "mixup", "cutmix", "vcutmix")


def mix_batch(x, target, mode: str, alpha: float, prob: float, rng: np.random.Generator):
    if mode not in MIX_MODES:
        raise MaskclsError(f"train.mix={mode!r}: choose one of {', '.join(MIX_MODES)}")
    if mode == "none" or rng.random() >= prob:
        return x, target
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(len(x)))
    if mode == "mixup":
        return lam * x + (1 - lam) * x[perm], lam * target + (1 - lam) * target[perm]
    height, width = x.shape[2:]
    if mode == "vcutmix":
        cut_w = int(round(width * (1 - lam)))
        x0 = int(rng.integers(0, width - cut_w + 1))
        y0, y1, x1 = 0, height, x0 + cut_w
    else:
        cut_h, cut_w = int(height * np.sqrt(1 - lam)), int(width * np.sqrt(1 - lam))
        cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    x = x.clone()
    x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
    lam = 1 - (y1 - y0) * (x1 - x0) / (height * width)  # the area actually pasted
    return x, lam * target + (1 - lam) * target[perm]
