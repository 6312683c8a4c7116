"""Models: a backbone from the registry plus the classification heads.

Modes: `finetune` trains everything; `freeze` trains the head on a frozen backbone (kept in
eval mode so its BatchNorm statistics stay ImageNet's); `probe` is `freeze` with the backbone's
features computed once and cached, the fast path on a CPU.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import MaskclsError
from .backbones import create_backbone
from .heads import class_probs, head_layout

MODES = ("finetune", "freeze", "probe")


class MaskClassifier(nn.Module):
    def __init__(self, backbone: nn.Module, num_features: int, layout, drop_rate: float = 0.0, frozen: bool = False):
        super().__init__()
        self.backbone = backbone
        self.layout = layout
        self.frozen = frozen
        self.dropout = nn.Dropout(drop_rate)
        self.head = nn.Linear(num_features, sum(n for _, n, _ in layout))
        if frozen:
            self.backbone.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def forward_features(self, x):
        return self.backbone(x)

    def forward_head(self, features):
        return self.head(self.dropout(features))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def predict_proba(self, x):
        """(B,18) class probabilities; the form a served or exported model returns."""
        return class_probs(self(x), self.layout)


def build_model(model_cfg: dict):
    """Return (model, backbone) where backbone carries the mean/std its weights expect."""
    mode = model_cfg.get("mode", "finetune")
    if mode not in MODES:
        raise MaskclsError(f"model.mode={mode!r}: choose one of {', '.join(MODES)}")
    backbone = create_backbone(model_cfg.get("backbone", "tf_efficientnet_lite0"), str(model_cfg.get("weights", "imagenet")))
    layout = head_layout(model_cfg.get("head", "multi"), bool(model_cfg.get("age_ordinal", False)))
    model = MaskClassifier(backbone.module, backbone.num_features, layout, float(model_cfg.get("drop_rate", 0.0)), frozen=mode != "finetune")
    return model, backbone
